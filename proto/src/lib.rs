//! Types that cross vislingo's process boundaries (dispatcher -> queue -> worker -> storage).
//! Kept dependency-light (serde only) so the dispatcher never compiles the models.

pub mod asset;
pub mod job;
pub mod keys;
pub mod lang;
pub mod result;
pub mod topology;

pub use asset::AssetKind;
pub use job::{Job, JobError, BUILTIN_TASKS, JOB_SCHEMA_VERSION};
pub use lang::{parse_list, Lang, LangError, TextDirection};
pub use result::{AssetResult, TaskOutput};
