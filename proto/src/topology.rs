//! The RabbitMQ topology of the fleet, declared here once and applied by both dispatcher and worker (the
//! `vislingo-fleet` crate turns it into AMQP declarations). Changing a queue's arguments needs a new
//! [`TOPOLOGY_VERSION`]: RabbitMQ refuses to redeclare a queue with other arguments.
//!
//! ```text
//! dispatcher --(routing key <route>)--> exchange vislingo.jobs (direct, durable)
//!                                         `--> queue vislingo.jobs.<route> (quorum, x-delivery-limit)
//!                                               | rejected / delivery limit reached / dead-lettered by a worker
//!                                               v
//!                                       exchange vislingo.jobs.dlx (direct) --> queue vislingo.jobs.<route>.dead
//! ```

use crate::AssetKind;

/// Version of this layout; part of no name, recorded in the README and in each job's headers.
pub const TOPOLOGY_VERSION: u32 = 1;
/// Where the dispatcher publishes jobs, with the model route as routing key.
pub const EXCHANGE: &str = "vislingo.jobs";
/// Where rejected and poison jobs go, with their route as routing key.
pub const DEAD_LETTER_EXCHANGE: &str = "vislingo.jobs.dlx";
/// Deliveries of one job before the broker dead-letters it (a crash or a stall of the worker counts as one).
pub const DELIVERY_LIMIT: i64 = 5;
/// Header a worker sets on a job it dead-letters: why (`decode: ...`, `invalid job: ...`).
pub const REASON_HEADER: &str = "x-vislingo-reason";
/// Header a worker sets on a job it gives back unrun by republishing it: the deliveries it had so far (the queue's
/// own `x-delivery-count` starts again at 0 for the copy). A job's deliveries are this plus `x-delivery-count`.
pub const DELIVERIES_HEADER: &str = "x-vislingo-deliveries";
/// The route of the image model (Llama 3.2 Vision) unless `--model-route image=...` says otherwise.
pub const DEFAULT_IMAGE_ROUTE: &str = "mllama";
/// The route of the video model (LLaVA-NeXT-Video) unless `--model-route video=...` says otherwise.
pub const DEFAULT_VIDEO_ROUTE: &str = "llava-next-video";

/// A queue argument's value, in the AMQP type RabbitMQ expects for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    /// AMQP long string (`x-queue-type`, `x-dead-letter-exchange`, ...).
    Str(String),
    /// AMQP long-long int (`x-delivery-limit`).
    Int(i64),
}

/// One durable queue, its arguments and the binding that feeds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    pub exchange: &'static str,
    pub routing_key: String,
    pub arguments: Vec<(&'static str, ArgValue)>,
}

/// The queues of one model route: its job queue and its dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTopology {
    pub route: String,
    pub jobs: QueueSpec,
    pub dead: QueueSpec,
}

/// The route of an asset kind by default.
pub fn default_route(kind: AssetKind) -> &'static str {
    match kind {
        AssetKind::Image => DEFAULT_IMAGE_ROUTE,
        AssetKind::Video => DEFAULT_VIDEO_ROUTE,
    }
}

/// The job queue of a route.
pub fn queue_name(route: &str) -> String {
    format!("vislingo.jobs.{route}")
}

/// The dead-letter queue of a route.
pub fn dead_letter_queue_name(route: &str) -> String {
    format!("vislingo.jobs.{route}.dead")
}

/// A route is a queue-name segment: lower-case ASCII letters, digits, `.`, `_`, `-`; 1 to 100 characters.
pub fn check_route(route: &str) -> Result<(), String> {
    let valid = route.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if route.is_empty() || route.len() > 100 || !valid {
        return Err(format!(
            "model route `{route}`: expected 1 to 100 lower-case ASCII letters, digits, `.`, `_`, `-`"
        ));
    }
    Ok(())
}

impl RouteTopology {
    pub fn new(route: &str) -> Result<RouteTopology, String> {
        check_route(route)?;
        let quorum = ("x-queue-type", ArgValue::Str("quorum".into()));
        Ok(RouteTopology {
            route: route.to_string(),
            jobs: QueueSpec {
                name: queue_name(route),
                exchange: EXCHANGE,
                routing_key: route.to_string(),
                arguments: vec![
                    quorum.clone(),
                    ("x-delivery-limit", ArgValue::Int(DELIVERY_LIMIT)),
                    ("x-dead-letter-exchange", ArgValue::Str(DEAD_LETTER_EXCHANGE.into())),
                    ("x-dead-letter-routing-key", ArgValue::Str(route.into())),
                ],
            },
            dead: QueueSpec {
                name: dead_letter_queue_name(route),
                exchange: DEAD_LETTER_EXCHANGE,
                routing_key: route.to_string(),
                arguments: vec![quorum],
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_has_a_quorum_job_queue_that_dead_letters_into_its_own_dead_queue() {
        let topology = RouteTopology::new("mllama").unwrap();
        assert_eq!(topology.jobs.name, "vislingo.jobs.mllama");
        assert_eq!(topology.jobs.routing_key, "mllama");
        let arg = |name: &str| topology.jobs.arguments.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        assert_eq!(arg("x-queue-type"), Some(ArgValue::Str("quorum".into())));
        assert_eq!(arg("x-delivery-limit"), Some(ArgValue::Int(DELIVERY_LIMIT)));
        assert_eq!(arg("x-dead-letter-exchange"), Some(ArgValue::Str(DEAD_LETTER_EXCHANGE.into())));
        assert_eq!(topology.dead.exchange, DEAD_LETTER_EXCHANGE);
        assert_eq!(topology.dead.name, "vislingo.jobs.mllama.dead");
    }

    #[test]
    fn routes_are_checked() {
        assert!(RouteTopology::new("Llama 3").is_err());
        assert!(RouteTopology::new("").is_err());
        assert_eq!(default_route(AssetKind::Video), DEFAULT_VIDEO_ROUTE);
    }
}
