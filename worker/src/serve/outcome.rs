//! What happens to a delivery once its job is over: [`settle`] is the only function that acks, nacks or
//! dead-letters. A job is acked only after its record is durably written.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, LongString};
use lapin::{BasicProperties, Channel};
use vislingo_proto::topology::{DEAD_LETTER_EXCHANGE, REASON_HEADER};

use crate::metrics::Metrics;

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its result record is written: ack.
    Done,
    /// Its error record is written (undecodable asset, missing object, ...): dead-letter with the reason, so that
    /// it is neither lost nor retried.
    Failed { stage: String, reason: String },
    /// The message is no job this worker can run (malformed, other schema, unknown task): dead-letter.
    Invalid { reason: String },
    /// Not finished for a passing reason (shutdown during a storage retry, ...): back to the queue.
    Requeue,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed { .. } => "failed",
            Outcome::Invalid { .. } => "invalid",
            Outcome::Requeue => "requeued",
        }
    }
}

/// Why a delivery could not be settled: the channel or connection is gone, and the broker will redeliver it.
#[derive(Debug, thiserror::Error)]
#[error("cannot settle delivery {delivery_tag}: {message}")]
pub struct SettleError {
    pub delivery_tag: u64,
    pub message: String,
}

/// Acks, dead-letters or requeues `delivery` on `channel` (which has publisher confirms on), and counts it.
/// Dead-lettering publishes the message to the dead-letter exchange with the reason header, waits for the
/// broker's confirm, then acks the original: the job is in exactly one place at any moment but the gap.
pub async fn settle(
    channel: &Channel,
    route: &str,
    delivery: &Delivery,
    outcome: &Outcome,
    metrics: &Metrics,
) -> Result<(), SettleError> {
    let tag = delivery.delivery_tag;
    let failed = |message: String| SettleError { delivery_tag: tag, message };
    let reason = match outcome {
        Outcome::Done => None,
        Outcome::Failed { stage, reason } => Some((stage.as_str(), reason.as_str())),
        Outcome::Invalid { reason } => Some(("invalid", reason.as_str())),
        Outcome::Requeue => {
            let requeued = delivery
                .acker
                .nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() })
                .await
                .map_err(|e| failed(e.to_string()))?;
            if !requeued {
                return Err(failed("channel closed before the nack".into()));
            }
            metrics.jobs.with_label_values(&[outcome.label()]).inc();
            return Ok(());
        }
    };
    if let Some((stage, reason)) = reason {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(REASON_HEADER.into(), AMQPValue::LongString(LongString::from(reason)));
        headers.insert("x-vislingo-stage".into(), AMQPValue::LongString(LongString::from(stage)));
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(headers);
        let properties = match delivery.properties.message_id() {
            Some(id) => properties.with_message_id(id.clone()),
            None => properties,
        };
        let confirm = channel
            .basic_publish(
                DEAD_LETTER_EXCHANGE.into(),
                route.into(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await
            .map_err(|e| failed(format!("dead-letter publish: {e}")))?
            .await
            .map_err(|e| failed(format!("dead-letter confirm: {e}")))?;
        if !confirm.is_ack() {
            return Err(failed("the broker refused the dead-lettered copy".into()));
        }
        metrics.dead_letters.with_label_values(&[stage_label(stage)]).inc();
    }
    let acked = delivery.acker.ack(BasicAckOptions::default()).await.map_err(|e| failed(e.to_string()))?;
    if !acked {
        return Err(failed("channel closed before the ack".into()));
    }
    metrics.jobs.with_label_values(&[outcome.label()]).inc();
    Ok(())
}

/// Stages as a bounded label set.
fn stage_label(stage: &str) -> &'static str {
    match stage {
        "read" | "download" => "download",
        "decode" => "decode",
        "generate" => "generate",
        "translate" => "translate",
        "poison" => "poison",
        "invalid" => "invalid",
        _ => "other",
    }
}
