//! What the consumer tests share: a broker with the streams, an
//! `orders.placed` to publish, a consumer running over it, handlers that
//! count what they see, and waiting for an outcome.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use shop_infra::NatsServer;
use shop_runtime::{
    CancellationToken,
    consumer::{self, EventHandler, HandleError},
    event::IncomingEvent,
    topology::{self, ConsumerDefinition},
};
use uuid::Uuid;

/// A nats-server of the test's own, with every stream.
pub(crate) async fn broker() -> anyhow::Result<(NatsServer, async_nats::jetstream::Context)> {
    let nats = NatsServer::start().await?;
    let (_, js) = shop_runtime::nats::connect(&nats.url(), "test").await?;
    topology::ensure_streams(&js, 1).await?;
    Ok((nats, js))
}

/// Publishes an `orders.placed` for `order`; returns its event id.
pub(crate) async fn publish_placed(js: &async_nats::jetstream::Context, order: &str) -> anyhow::Result<Uuid> {
    let id = Uuid::now_v7();
    let headers = shop_runtime::event::headers(
        id,
        "shop.events.v1.OrderPlaced",
        "test",
        order,
        chrono::Utc::now(),
        &Default::default(),
    );
    let body = format!(r#"{{"orderId":"{order}"}}"#);
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(body.into())
        .headers(headers);
    js.send_publish(format!("orders.placed.{order}"), message)
        .await?
        .await?;
    Ok(id)
}

/// Polls `done` for up to ten seconds.
pub(crate) async fn eventually(what: &str, mut done: impl AsyncFnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    for _ in 0..400 {
        if done().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("timed out waiting for {what}")
}

/// The number of messages on `stream` (`ORDERS`, `DLQ`, ...).
pub(crate) async fn stream_messages(js: &async_nats::jetstream::Context, stream: &str) -> anyhow::Result<u64> {
    Ok(js.get_stream(stream).await?.info().await?.state.messages)
}

/// `consumer::run` in a task of its own, until `stop`.
pub(crate) struct RunningConsumer {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningConsumer {
    pub(crate) fn spawn<H: EventHandler>(
        js: &async_nats::jetstream::Context,
        definition: ConsumerDefinition,
        handler: Arc<H>,
        concurrency: usize,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(consumer::run(
            js.clone(),
            definition,
            handler,
            concurrency,
            shutdown.clone(),
        ));
        Self { shutdown, task }
    }

    /// Shuts the consumer down and waits for it to end.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?;
        Ok(())
    }

    /// Ends the consumer the way a crash would: no outcome of what it holds
    /// reaches the server, and no in-progress acks either.
    pub(crate) async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// As `stop`, but fails if the consumer takes longer than `limit` to end.
    pub(crate) async fn stop_within(self, limit: Duration) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(limit, self.task).await??;
        Ok(())
    }
}

/// What a [`Scripted`] handler does on one attempt.
pub(crate) enum Step {
    Handle,
    Retry(&'static str),
    Reject(&'static str),
    /// A call that never returns.
    Hang,
}

/// Does on each attempt (counted from 0) what its script says, and counts
/// attempts and handled events.
pub(crate) struct Scripted {
    script: fn(usize) -> Step,
    pub(crate) attempts: AtomicUsize,
    pub(crate) handled: AtomicUsize,
}

impl Scripted {
    pub(crate) fn new(script: fn(usize) -> Step) -> Self {
        Self {
            script,
            attempts: AtomicUsize::new(0),
            handled: AtomicUsize::new(0),
        }
    }
}

impl EventHandler for Scripted {
    async fn handle(&self, _event: IncomingEvent) -> Result<(), HandleError> {
        match (self.script)(self.attempts.fetch_add(1, Ordering::SeqCst)) {
            Step::Handle => {}
            Step::Retry(why) => return Err(HandleError::Retry(why.into())),
            Step::Reject(why) => return Err(HandleError::Reject(why.into())),
            Step::Hang => std::future::pending::<()>().await,
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// How often each key (a subject, an event id) was seen, across the
/// handler's concurrent calls.
pub(crate) struct Tally<K>(Mutex<HashMap<K, usize>>);

impl<K: Eq + Hash + Clone> Tally<K> {
    pub(crate) fn new() -> Self {
        Self(Mutex::new(HashMap::new()))
    }

    pub(crate) fn add(&self, key: K) {
        *self.0.lock().expect("not poisoned").entry(key).or_default() += 1;
    }

    /// How many different keys were seen.
    pub(crate) fn keys(&self) -> usize {
        self.0.lock().expect("not poisoned").len()
    }

    pub(crate) fn counts(&self) -> HashMap<K, usize> {
        self.0.lock().expect("not poisoned").clone()
    }
}
