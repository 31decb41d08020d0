//! Calling a stack as its clients do: through the gateway (one, or every
//! replica in turn), with tokens from its development sign-in.

use std::time::Duration;

use anyhow::Context;

/// A customer's and an admin's token, from the gateway's dev auth.
pub(crate) struct DevTokens {
    pub(crate) customer: String,
    pub(crate) admin: String,
}

pub(crate) async fn dev_tokens(gateway: u16) -> anyhow::Result<DevTokens> {
    let channel = gateway_channel(gateway).await?;
    Ok(DevTokens {
        customer: issue_token(&channel, "alice", &["customer"]).await?,
        admin: issue_token(&channel, "ops", &["admin"]).await?,
    })
}

/// A channel over every gateway on `ports`, as a client spreading its calls
/// over them uses one: each call goes to the next serving gateway, and on
/// to the next when one refuses it (see `shop_runtime::upstream`).
pub(crate) fn gateways(ports: &[u16]) -> shop_runtime::upstream::Balanced {
    use shop_runtime::upstream::{Balanced, ReachSettings, Replicas, Upstream};
    let replicas = Replicas::loopback(ports);
    let reach = ReachSettings {
        // A gateway back from a restart takes calls again within a second.
        health_interval: Duration::from_secs(1),
        ..ReachSettings::default()
    };
    Balanced::new(Upstream::new("gateway", &replicas, reach, None))
}

pub(crate) async fn gateway_channel(port: u16) -> anyhow::Result<tonic::transport::Channel> {
    let url = format!("http://127.0.0.1:{port}");
    tonic::transport::Endpoint::from_shared(url.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to the gateway at {url}"))
}

/// A token from the gateway's development auth.
pub(crate) async fn issue_token(
    channel: &tonic::transport::Channel,
    user: &str,
    roles: &[&str],
) -> anyhow::Result<String> {
    use shop_proto::auth::v1::{IssueTokenRequest, dev_auth_service_client::DevAuthServiceClient};
    let request = IssueTokenRequest {
        user_id: user.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    };
    let response = DevAuthServiceClient::new(channel.clone())
        .issue_token(request)
        .await
        .with_context(|| format!("DevAuthService/IssueToken for {user}"))?;
    Ok(response.into_inner().access_token)
}

pub(crate) fn authorized<T>(bearer: &tonic::metadata::AsciiMetadataValue, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", bearer.clone());
    request
}
