//! Fleet tests: the dispatcher, RabbitMQ, S3-compatible storage and workers exercised together over real
//! connections. They arrive with the fleet (dispatcher enqueue, worker serve); model tests live in worker/tests.
