//! Types that cross vislingo's process boundaries (dispatcher -> queue -> worker -> storage).
//! Kept dependency-light (serde only) so the dispatcher never compiles the models.

pub mod asset;
pub mod lang;
pub mod result;

pub use asset::AssetKind;
pub use lang::{parse_list, Lang, LangError, TextDirection};
pub use result::{AssetResult, TaskOutput};
