//! [`AdminClient`]: a running emulator's `/admin` API and its liveness,
//! called from outside: the test stacks, the fault runs and `cargo xtask
//! verify`. The one place these requests are written.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::{
    LIVEZ,
    admin::{FAULTS, LEDGER, Ledger},
    domain::LedgerLine,
    faults::Faults,
};

/// How long one admin call may take: the emulator answers them at once,
/// but a loaded machine is slow.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{method} {url}: {source}")]
    Call {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the payment provider at {url} did not answer within {patience:?}: {last}")]
    NotLive {
        url: String,
        patience: Duration,
        last: String,
    },
}

/// The emulator at one base URL, e.g. `http://127.0.0.1:12111`.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(base: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// Its base URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET /admin/ledger`: where each intent's money is, oldest first.
    pub async fn ledger(&self) -> Result<Vec<LedgerLine>, AdminError> {
        let ledger: Ledger = self.call("GET", LEDGER, self.http.get(self.at(LEDGER))).await?;
        Ok(ledger.data)
    }

    /// `GET /admin/faults`: the knobs as set.
    pub async fn faults(&self) -> Result<Faults, AdminError> {
        self.call("GET", FAULTS, self.http.get(self.at(FAULTS))).await
    }

    /// `PUT /admin/faults`: sets every knob (`Faults::default()`: all off);
    /// answers them as now set.
    pub async fn set_faults(&self, faults: &Faults) -> Result<Faults, AdminError> {
        self.call("PUT", FAULTS, self.http.put(self.at(FAULTS)).json(faults))
            .await
    }

    /// Until `GET /livez` answers, for at most `patience`: a provider
    /// just started is listening and has replayed its journal.
    pub async fn wait_live(&self, patience: Duration) -> Result<(), AdminError> {
        let started = tokio::time::Instant::now();
        loop {
            let last = match self.http.get(self.at(LIVEZ)).send().await {
                Ok(answer) if answer.status().is_success() => return Ok(()),
                Ok(answer) => format!("status {}", answer.status()),
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= patience {
                return Err(AdminError::NotLive {
                    url: self.base.clone(),
                    patience,
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, AdminError> {
        let failed = |source| AdminError::Call {
            method,
            url: self.at(path),
            source,
        };
        request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(failed)?
            .json()
            .await
            .map_err(failed)
    }
}
