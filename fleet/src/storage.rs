//! S3-compatible object storage for the fleet: paginated listing of any number of keys, streamed size-limited
//! downloads, result uploads. Credentials come from the standard AWS chain (environment, profiles, instance
//! roles) and never appear in logs; `--s3-endpoint` with path-style addressing serves MinIO-like servers.

use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use clap::Args;

/// How to reach the object store. Credentials: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, ...
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// S3 endpoint URL for S3-compatible servers (MinIO, s3s-fs, ...); default: AWS (or `AWS_ENDPOINT_URL`).
    #[arg(long, env = "S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`); default: on with --s3-endpoint, off for AWS.
    #[arg(long, env = "S3_PATH_STYLE")]
    pub s3_path_style: Option<bool>,
    /// Region when none is configured through the AWS chain.
    #[arg(long, env = "S3_DEFAULT_REGION", default_value = "us-east-1")]
    pub s3_default_region: String,
    /// Seconds one S3 request attempt may take before it counts as failed (and is retried).
    #[arg(long, env = "S3_TIMEOUT_S", default_value_t = 30)]
    pub s3_timeout_s: u64,
}

/// `s3://bucket/prefix`: where assets are listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Empty, or ending with `/` unless the user gave a partial name (`s3://b/photo` lists `photo*`).
    pub prefix: String,
}

impl S3Url {
    pub fn parse(url: &str) -> Result<S3Url, String> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| format!("`{url}`: expected s3://bucket/prefix"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("`{url}`: no bucket name"));
        }
        Ok(S3Url { bucket: bucket.to_string(), prefix: prefix.to_string() })
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Why a storage operation failed; [`StorageError::is_transient`] decides whether it is worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("s3://{bucket}/{key}: no such object")]
    NotFound { bucket: String, key: String },
    #[error("s3://{bucket}/{key}: {size} bytes is over the limit of {limit} bytes")]
    TooLarge { bucket: String, key: String, size: u64, limit: u64 },
    /// Network failures, timeouts, throttling and server errors.
    #[error("s3://{bucket}/{key}: {operation} failed (will retry): {message}")]
    Transient { bucket: String, key: String, operation: &'static str, message: String },
    /// Refused requests (no such bucket, access denied, bad request).
    #[error("s3://{bucket}/{key}: {operation} refused: {message}")]
    Refused { bucket: String, key: String, operation: &'static str, message: String },
}

impl StorageError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Transient { .. })
    }

    fn from_sdk<E, R>(error: SdkError<E, R>, operation: &'static str, bucket: &str, key: &str) -> StorageError
    where
        E: std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + HttpStatus,
    {
        let status = match &error {
            SdkError::ServiceError(service) => Some(service.raw().http_status()),
            SdkError::ResponseError(response) => Some(response.raw().http_status()),
            _ => None,
        };
        let message = DisplayErrorContext(&error).to_string();
        let (bucket, key) = (bucket.to_string(), key.to_string());
        match (&error, status) {
            (_, Some(404)) if operation != "list" => StorageError::NotFound { bucket, key },
            (SdkError::ConstructionFailure(_), _) => StorageError::Refused { bucket, key, operation, message },
            (SdkError::ServiceError(_), Some(status)) if status != 429 && status < 500 && status != 408 => {
                StorageError::Refused { bucket, key, operation, message }
            }
            _ => StorageError::Transient { bucket, key, operation, message },
        }
    }
}

/// The HTTP status of a raw response, whatever the SDK's response type.
pub trait HttpStatus {
    fn http_status(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn http_status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// A connected S3 client (cheap to clone).
#[derive(Debug, Clone)]
pub struct Storage {
    client: aws_sdk_s3::Client,
}

impl Storage {
    /// Builds the client from the AWS chain and `args`. Makes no request.
    pub async fn connect(args: &S3Args) -> Storage {
        let region = aws_config::meta::region::RegionProviderChain::default_provider()
            .or_else(aws_sdk_s3::config::Region::new(args.s3_default_region.clone()));
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(args.s3_timeout_s.max(1)))
            .build();
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(region)
            .timeout_config(timeouts)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
            .load()
            .await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(endpoint) = &args.s3_endpoint {
            config = config.endpoint_url(endpoint);
        }
        config = config.force_path_style(args.s3_path_style.unwrap_or(args.s3_endpoint.is_some()));
        Storage { client: aws_sdk_s3::Client::from_conf(config.build()) }
    }

    /// Every object under `prefix`, page by page (1000 keys a page), in key order; `on_page` sees each page as
    /// it arrives so that millions of keys never need to be held twice.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        mut on_page: impl FnMut(Vec<ObjectInfo>),
    ) -> Result<u64, StorageError> {
        let mut pages = self.client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
        let mut listed = 0;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| StorageError::from_sdk(error, "list", bucket, prefix))?;
            let objects: Vec<ObjectInfo> = page
                .contents()
                .iter()
                .filter_map(|object| {
                    let key = object.key()?;
                    Some(ObjectInfo { key: key.to_string(), size: object.size().unwrap_or(0).max(0) as u64 })
                })
                .collect();
            listed += objects.len() as u64;
            on_page(objects);
        }
        Ok(listed)
    }

    /// The object's bytes, streamed; refused past `limit` bytes (announced or received).
    pub async fn get(&self, bucket: &str, key: &str, limit: u64) -> Result<Vec<u8>, StorageError> {
        let output = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| StorageError::from_sdk(error, "get", bucket, key))?;
        let too_large = |size: u64| StorageError::TooLarge { bucket: bucket.into(), key: key.into(), size, limit };
        let announced = output.content_length().unwrap_or(0).max(0) as u64;
        if announced > limit {
            return Err(too_large(announced));
        }
        let mut bytes = Vec::with_capacity(announced as usize);
        let mut body = output.body;
        loop {
            match body.next().await {
                None => break,
                Some(Ok(chunk)) => {
                    if (bytes.len() + chunk.len()) as u64 > limit {
                        return Err(too_large((bytes.len() + chunk.len()) as u64));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Some(Err(error)) => {
                    return Err(StorageError::Transient {
                        bucket: bucket.into(),
                        key: key.into(),
                        operation: "get",
                        message: DisplayErrorContext(&error).to_string(),
                    })
                }
            }
        }
        Ok(bytes)
    }

    /// Like [`Storage::get`], with a missing object as `None`.
    pub async fn get_if_exists(&self, bucket: &str, key: &str, limit: u64) -> Result<Option<Vec<u8>>, StorageError> {
        match self.get(bucket, key, limit).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The object's content type, `None` when it has none.
    pub async fn content_type(&self, bucket: &str, key: &str) -> Result<Option<String>, StorageError> {
        let output = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| StorageError::from_sdk(error, "head", bucket, key))?;
        Ok(output.content_type().map(str::to_string))
    }

    /// Writes `bytes` as a JSON object (overwriting: results are idempotent).
    pub async fn put_json(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.put_json_with(bucket, key, bytes, &[]).await
    }

    /// Writes `bytes` as a JSON object with user metadata (`x-amz-meta-<name>`; names in lower case).
    pub async fn put_json_with(
        &self,
        bucket: &str,
        key: &str,
        bytes: Vec<u8>,
        metadata: &[(&str, &str)],
    ) -> Result<(), StorageError> {
        let mut request = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(bytes));
        for (name, value) in metadata {
            request = request.metadata(*name, *value);
        }
        request.send().await.map_err(|error| StorageError::from_sdk(error, "put", bucket, key))?;
        Ok(())
    }

    /// The object's user metadata (names in lower case, without `x-amz-meta-`); `None` when there is no object.
    pub async fn head_metadata(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<std::collections::HashMap<String, String>>, StorageError> {
        match self.client.head_object().bucket(bucket).key(key).send().await {
            Ok(output) => Ok(Some(output.metadata().cloned().unwrap_or_default())),
            Err(error) => match StorageError::from_sdk(error, "head", bucket, key) {
                StorageError::NotFound { .. } => Ok(None),
                error => Err(error),
            },
        }
    }

    /// Deletes the object; a missing one is fine.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), StorageError> {
        match self.client.delete_object().bucket(bucket).key(key).send().await {
            Ok(_) => Ok(()),
            Err(error) => match StorageError::from_sdk(error, "delete", bucket, key) {
                StorageError::NotFound { .. } => Ok(()),
                error => Err(error),
            },
        }
    }

    /// Writes raw bytes (tests and tools).
    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|error| StorageError::from_sdk(error, "put", bucket, key))?;
        Ok(())
    }

    /// Creates a bucket (tests and tools); an existing bucket of ours is fine.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), StorageError> {
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(error) => {
                let service = error.as_service_error();
                if service.is_some_and(|e| e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()) {
                    return Ok(());
                }
                Err(StorageError::from_sdk(error, "create bucket", bucket, ""))
            }
        }
    }
}

/// Retries `operation` while it fails transiently, with exponential backoff from 250 ms up to `max_delay`,
/// until `give_up` turns true (then the last error is returned). Each retry is logged and passed to `on_retry`.
pub async fn with_retries<T, F, Fut>(
    what: &str,
    max_delay: Duration,
    give_up: impl Fn() -> bool,
    mut on_retry: impl FnMut(&StorageError),
    mut operation: F,
) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StorageError>>,
{
    let mut delay = Duration::from_millis(250);
    loop {
        match operation().await {
            Err(error) if error.is_transient() && !give_up() => {
                tracing::warn!(%error, what, delay_ms = delay.as_millis() as u64, "storage retry");
                on_retry(&error);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(max_delay);
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_split_into_bucket_and_prefix() {
        assert_eq!(
            S3Url::parse("s3://b/in/photos/").unwrap(),
            S3Url { bucket: "b".into(), prefix: "in/photos/".into() }
        );
        assert_eq!(S3Url::parse("s3://b").unwrap(), S3Url { bucket: "b".into(), prefix: String::new() });
        assert!(S3Url::parse("b/x").unwrap_err().contains("s3://"));
        assert!(S3Url::parse("s3:///x").is_err());
    }

    #[test]
    fn only_transient_errors_are_retried() {
        let transient =
            StorageError::Transient { bucket: "b".into(), key: "k".into(), operation: "get", message: "x".into() };
        assert!(transient.is_transient());
        assert!(!StorageError::NotFound { bucket: "b".into(), key: "k".into() }.is_transient());
        assert!(transient.to_string().starts_with("s3://b/k: get failed"));
    }
}
