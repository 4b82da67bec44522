//! RabbitMQ for the fleet: connecting (the URL's password never logged), declaring `proto`'s topology, and a
//! publisher of persistent jobs whose confirms are pipelined (a window of unconfirmed messages in flight).

use std::collections::VecDeque;

use clap::Args;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use lapin::{Confirmation, PublisherConfirm};
use vislingo_proto::topology::{ArgValue, QueueSpec, RouteTopology, DEAD_LETTER_EXCHANGE, EXCHANGE};
use vislingo_proto::{Job, JOB_SCHEMA_VERSION};

/// How to reach RabbitMQ.
#[derive(Clone, Args)]
pub struct BrokerArgs {
    /// AMQP URL (`amqp://user:password@host:5672/vhost`); the password is never logged.
    #[arg(long = "amqp", env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
}

impl std::fmt::Debug for BrokerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerArgs").field("amqp_url", &redact(&self.amqp_url)).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: lapin::Error },
    #[error("broker: {operation}: {source}")]
    Amqp { operation: String, source: lapin::Error },
    #[error("broker refused the job {id} (publisher nack)")]
    Nacked { id: String },
    #[error("no queue took the job {id} (routing key `{routing_key}`)")]
    Unroutable { id: String, routing_key: String },
}

/// Wraps a lapin error with what was being done.
pub fn amqp(operation: impl Into<String>) -> impl FnOnce(lapin::Error) -> BrokerError {
    let operation = operation.into();
    move |source| BrokerError::Amqp { operation, source }
}

/// The URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let authority = match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split_once(':').map_or(credentials, |(user, _)| user);
            format!("{user}:***@{host}")
        }
        None => authority.to_string(),
    };
    match path {
        Some(path) => format!("{scheme}://{authority}/{path}"),
        None => format!("{scheme}://{authority}"),
    }
}

pub async fn connect(url: &str) -> Result<Connection, BrokerError> {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|source| BrokerError::Connect { url: redact(url), source })
}

fn arguments(spec: &QueueSpec) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in &spec.arguments {
        let value = match value {
            ArgValue::Str(text) => AMQPValue::LongString(LongString::from(text.as_str())),
            ArgValue::Int(number) => AMQPValue::LongLongInt(*number),
        };
        table.insert((*name).into(), value);
    }
    table
}

/// Declares the exchanges, the route's job and dead-letter queues and their bindings (idempotent).
pub async fn declare(channel: &Channel, topology: &RouteTopology) -> Result<(), BrokerError> {
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    for exchange in [EXCHANGE, DEAD_LETTER_EXCHANGE] {
        channel
            .exchange_declare(exchange.into(), ExchangeKind::Direct, durable, FieldTable::default())
            .await
            .map_err(amqp(format!("declare exchange {exchange}")))?;
    }
    for spec in [&topology.dead, &topology.jobs] {
        channel
            .queue_declare(spec.name.as_str().into(), QueueDeclareOptions::durable(), arguments(spec))
            .await
            .map_err(amqp(format!("declare queue {}", spec.name)))?;
        channel
            .queue_bind(
                spec.name.as_str().into(),
                spec.exchange.into(),
                spec.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp(format!("bind queue {}", spec.name)))?;
    }
    Ok(())
}

/// Messages ready in a queue and consumers on it (a passive declare; the queue must exist).
pub async fn queue_depth(channel: &Channel, queue: &str) -> Result<(u32, u32), BrokerError> {
    let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let queue_state = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .map_err(amqp(format!("inspect queue {queue}")))?;
    Ok((queue_state.message_count(), queue_state.consumer_count()))
}

/// The AMQP properties of a job: persistent JSON, its id as message id, the schema version as a header.
pub fn job_properties(job: &Job) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("x-vislingo-schema".into(), AMQPValue::LongUInt(JOB_SCHEMA_VERSION));
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(job.id.as_str().into())
        .with_headers(headers)
}

/// Publishes jobs with publisher confirms, keeping up to `window` unconfirmed at once.
pub struct Publisher {
    channel: Channel,
    window: usize,
    pending: VecDeque<(String, String, PublisherConfirm)>,
    pub confirmed: u64,
}

impl Publisher {
    pub async fn new(connection: &Connection, window: usize) -> Result<Publisher, BrokerError> {
        let channel = connection.create_channel().await.map_err(amqp("open channel"))?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(amqp("confirm.select"))?;
        Ok(Publisher { channel, window: window.max(1), pending: VecDeque::new(), confirmed: 0 })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Sends `job` to `route`; returns once the window has room (older confirms awaited as needed).
    pub async fn publish(&mut self, route: &str, job: &Job) -> Result<(), BrokerError> {
        while self.pending.len() >= self.window {
            self.confirm_oldest().await?;
        }
        let confirm = self
            .channel
            .basic_publish(
                EXCHANGE.into(),
                route.into(),
                BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                &job.to_json(),
                job_properties(job),
            )
            .await
            .map_err(amqp(format!("publish job {}", job.id)))?;
        self.pending.push_back((job.id.clone(), route.to_string(), confirm));
        Ok(())
    }

    async fn confirm_oldest(&mut self) -> Result<(), BrokerError> {
        let Some((id, routing_key, confirm)) = self.pending.pop_front() else { return Ok(()) };
        match confirm.await.map_err(amqp(format!("confirm job {id}")))? {
            Confirmation::Ack(None) | Confirmation::NotRequested => {}
            Confirmation::Ack(Some(_returned)) => return Err(BrokerError::Unroutable { id, routing_key }),
            Confirmation::Nack(_) => return Err(BrokerError::Nacked { id }),
        }
        self.confirmed += 1;
        Ok(())
    }

    /// Waits for every outstanding confirm.
    pub async fn flush(&mut self) -> Result<(), BrokerError> {
        while !self.pending.is_empty() {
            self.confirm_oldest().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact("amqp://user:s3cret@host:5672/%2f"), "amqp://user:***@host:5672/%2f");
        assert_eq!(redact("amqp://host"), "amqp://host");
        assert_eq!(redact("amqps://u:p@h"), "amqps://u:***@h");
        let args = BrokerArgs { amqp_url: "amqp://u:hunter2@h/v".into() };
        assert!(!format!("{args:?}").contains("hunter2"));
    }
}
