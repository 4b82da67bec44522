//! What the dispatcher and the worker service share beyond `proto`: the S3 client ([`storage`]) and the RabbitMQ
//! connection, topology declaration and confirmed publisher ([`broker`]). Kept apart so the dispatcher never
//! compiles the models.

pub mod broker;
pub mod storage;

pub use broker::{BrokerArgs, BrokerError};
pub use storage::{S3Args, S3Url, Storage, StorageError};
