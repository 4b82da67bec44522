//! The job message: one asset of a batch to describe, as the dispatcher publishes it and the worker consumes it
//! (JSON body, versioned by [`JOB_SCHEMA_VERSION`]), plus the built-in task names both sides check against.

use serde::{Deserialize, Serialize};

use crate::{keys, AssetKind, Lang};

/// Bumped when a field changes meaning; a worker refuses (dead-letters) a job of another version.
pub const JOB_SCHEMA_VERSION: u32 = 1;

/// The tasks every worker knows (`worker/src/tasks/builtin.toml`; a worker test keeps the two lists equal).
pub const BUILTIN_TASKS: &[&str] = &["describe", "tags", "sentiment", "ad"];

/// One asset to process. Published persistent, with `message_id` = [`Job::id`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub schema_version: u32,
    /// Unique per publication (a re-enqueued asset gets a new id); carried on every log line about it.
    pub id: String,
    /// The batch name: results go under `results/<batch>/`.
    pub batch: String,
    /// Bucket holding the asset (results are written to the same bucket).
    pub bucket: String,
    /// Full object key of the asset.
    pub key: String,
    /// The asset's key relative to the listed prefix: the record's `asset` and the result's path.
    pub asset: String,
    pub kind: AssetKind,
    /// Size when listed; the worker refuses downloads larger than its own limit.
    pub size_bytes: u64,
    pub tasks: Vec<String>,
    pub langs: Vec<Lang>,
    /// Frames to sample from a video (ignored for images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u32>,
    /// Unix seconds at publication.
    pub enqueued_at: f64,
}

/// Why a job message cannot be processed at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    #[error("job message is not valid JSON for schema {JOB_SCHEMA_VERSION}: {0}")]
    Malformed(String),
    #[error("job schema version {found} is not {JOB_SCHEMA_VERSION}: upgrade the worker or re-enqueue")]
    Version { found: u32 },
    #[error("job {id}: {problem}")]
    Invalid { id: String, problem: String },
}

impl Job {
    /// Where the worker writes this job's result record.
    pub fn result_key(&self) -> String {
        keys::result_key(&self.batch, &self.asset)
    }

    /// Where the worker writes this job's record of `kind` (result or error).
    pub fn record_key(&self, kind: keys::RecordKind) -> String {
        keys::record_key(&self.batch, &self.asset, kind)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job always serializes")
    }

    /// Parses and checks a message body: schema version, batch name, non-empty keys and task list.
    pub fn from_json(body: &[u8]) -> Result<Job, JobError> {
        #[derive(Deserialize)]
        struct Version {
            schema_version: u32,
        }
        let version: Version = serde_json::from_slice(body).map_err(|error| JobError::Malformed(error.to_string()))?;
        if version.schema_version != JOB_SCHEMA_VERSION {
            return Err(JobError::Version { found: version.schema_version });
        }
        let job: Job = serde_json::from_slice(body).map_err(|error| JobError::Malformed(error.to_string()))?;
        let invalid = |problem: String| JobError::Invalid { id: job.id.clone(), problem };
        keys::check_batch_name(&job.batch).map_err(invalid)?;
        if job.bucket.is_empty() || job.key.is_empty() || job.asset.is_empty() {
            return Err(invalid("empty bucket, key or asset".to_string()));
        }
        if job.tasks.is_empty() {
            return Err(invalid("no tasks".to_string()));
        }
        keys::check_asset_key(&job.asset).map_err(invalid)?;
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn job() -> Job {
        Job {
            schema_version: JOB_SCHEMA_VERSION,
            id: "b1-0001".into(),
            batch: "b1".into(),
            bucket: "photos".into(),
            key: "in/trips/beach.jpg".into(),
            asset: "trips/beach.jpg".into(),
            kind: AssetKind::Image,
            size_bytes: 1234,
            tasks: vec!["describe".into()],
            langs: vec![Lang::parse("fr").unwrap()],
            frames: None,
            enqueued_at: 1.5,
        }
    }

    #[test]
    fn a_job_round_trips_and_names_its_result_key() {
        let job = job();
        assert_eq!(Job::from_json(&job.to_json()).unwrap(), job);
        assert_eq!(job.result_key(), "results/b1/trips/beach.jpg.json");
        assert_eq!(job.record_key(keys::RecordKind::Error), "results/b1/trips/beach.jpg.error.json");
    }

    #[test]
    fn jobs_of_another_schema_or_malformed_are_refused_with_the_reason() {
        let mut value = serde_json::to_value(job()).unwrap();
        value["schema_version"] = 2.into();
        let error = Job::from_json(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert_eq!(error, JobError::Version { found: 2 });
        assert!(matches!(Job::from_json(b"{\"schema_version\": 1}"), Err(JobError::Malformed(_))));
        assert!(matches!(Job::from_json(b"not json"), Err(JobError::Malformed(_))));
        let bad_batch = Job { batch: "a/b".into(), ..job() };
        assert!(matches!(Job::from_json(&bad_batch.to_json()), Err(JobError::Invalid { .. })));
        let no_tasks = Job { tasks: vec![], ..job() };
        assert!(Job::from_json(&no_tasks.to_json()).unwrap_err().to_string().contains("no tasks"));
        let shadowing = Job { asset: "a.jpg.error".into(), ..job() };
        assert!(matches!(Job::from_json(&shadowing.to_json()), Err(JobError::Invalid { .. })));
    }
}
