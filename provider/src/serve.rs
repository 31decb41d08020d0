//! The HTTP/1 server, with one trick axum alone cannot do: an answer can be
//! lost. A handler that marks its response with [`LoseAnswer`] has acted,
//! and its client sees the connection close without a response — as a
//! real client does when a provider's answer never reaches it.

use std::{convert::Infallible, time::Duration};

use axum::Router;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// A response extension: drop the connection instead of answering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoseAnswer;

/// How long open connections may finish their calls after `shutdown`.
const GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown`, then lets open calls finish
/// for a short grace.
pub(crate) async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        connections.spawn(connection(stream, app.clone(), shutdown.clone()));
        // Reap the finished ones as we go.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(GRACE, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "closing connections still open after the grace"
        );
        connections.shutdown().await;
    }
}

async fn connection(stream: tokio::net::TcpStream, app: Router, shutdown: CancellationToken) {
    let lose = CancellationToken::new();
    let service = {
        let lose = lose.clone();
        service_fn(move |request: hyper::Request<Incoming>| {
            let (app, lose) = (app.clone(), lose.clone());
            async move {
                let response = app.oneshot(request).await?;
                if response.extensions().get::<LoseAnswer>().is_some() {
                    // Closes the connection (below) without a response.
                    lose.cancel();
                    std::future::pending::<()>().await;
                }
                Ok::<_, Infallible>(response)
            }
        })
    };
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = lose.cancelled() => return,
        () = shutdown.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn => {}
        () = lose.cancelled() => {}
    }
}
