//! What happens to a delivery once its job is over: [`settle`] is the only function that acks, nacks,
//! dead-letters or gives back (republishes) a delivery. A job is acked only after its record is durably written,
//! or once its copy (dead-lettered or given back) is confirmed by the broker.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, LongString};
use lapin::{BasicProperties, Channel};
use vislingo_proto::topology::{DEAD_LETTER_EXCHANGE, DELIVERIES_HEADER, EXCHANGE, REASON_HEADER};

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
    /// Not run, given back so that a suspect job runs with nothing else in hand: republished with its
    /// `deliveries` so far (the quorum queue would count a requeue as one more delivery), then acked.
    GiveBack { deliveries: i64 },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed { .. } => "failed",
            Outcome::Invalid { .. } => "invalid",
            Outcome::Requeue | Outcome::GiveBack { .. } => "requeued",
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
        Outcome::GiveBack { deliveries } => {
            // The copy is a new message to the queue: its own `x-delivery-count` starts again.
            let mut headers = lapin::types::FieldTable::default();
            for (name, value) in delivery.properties.headers().iter().flat_map(|h| h.inner()) {
                if name.as_str() != "x-delivery-count" {
                    headers.insert(name.clone(), value.clone());
                }
            }
            headers.insert(DELIVERIES_HEADER.into(), AMQPValue::LongLongInt(*deliveries));
            let properties = delivery.properties.clone().with_headers(headers);
            publish_confirmed(channel, EXCHANGE, route, &delivery.data, properties).await.map_err(failed)?;
            None
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
        publish_confirmed(channel, DEAD_LETTER_EXCHANGE, route, &delivery.data, properties).await.map_err(failed)?;
        metrics.dead_letters.with_label_values(&[stage_label(stage)]).inc();
    }
    let acked = delivery.acker.ack(BasicAckOptions::default()).await.map_err(|e| failed(e.to_string()))?;
    if !acked {
        return Err(failed("channel closed before the ack".into()));
    }
    metrics.jobs.with_label_values(&[outcome.label()]).inc();
    Ok(())
}

/// Publishes a copy of a delivery and waits for the broker's confirm.
async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    route: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), String> {
    let confirm = channel
        .basic_publish(exchange.into(), route.into(), BasicPublishOptions::default(), body, properties)
        .await
        .map_err(|e| format!("publish to {exchange}: {e}"))?
        .await
        .map_err(|e| format!("confirm from {exchange}: {e}"))?;
    if !confirm.is_ack() {
        return Err(format!("{exchange} refused the copy"));
    }
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
