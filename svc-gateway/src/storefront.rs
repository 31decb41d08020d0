//! The storefront's files (`STOREFRONT_DIR`), served to plain GET and HEAD
//! requests with headers that confine the page to what it loads: its own
//! scripts and styles, gRPC-web calls to this origin (or those its
//! `config.json` names), no framing, no inline code, no MIME sniffing, no
//! referrer.

use std::{convert::Infallible, future::Future};

use futures::TryFutureExt;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use tonic::body::Body;
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::config::StorefrontSettings;

/// The security headers of every storefront response.
fn security_headers(connects_to: &[String]) -> Result<HeaderMap, http::header::InvalidHeaderValue> {
    // What the page loads (web/index.html, web/src): app.js and styles.css
    // from here, fetches of config.json and gRPC-web to here, and to the
    // origins its config.json names. Nothing else, nothing inline.
    let mut connect_src = String::from("'self'");
    for origin in connects_to {
        connect_src.push(' ');
        connect_src.push_str(origin);
    }
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src {connect_src}; base-uri 'self'; form-action 'self'; \
         frame-ancestors 'none'; object-src 'none'"
    );
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_str(&policy)?);
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // For browsers that predate frame-ancestors.
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Ok(headers)
}

/// The storefront's files and the headers that go with each.
#[derive(Clone)]
pub struct Storefront {
    files: ServeDir,
    headers: HeaderMap,
}

impl Storefront {
    /// Origins come from `config.json`, checked by the config as URLs, so
    /// the policy is a header value; one that is not is refused here.
    pub fn new(settings: &StorefrontSettings) -> Result<Self, http::header::InvalidHeaderValue> {
        Ok(Self {
            files: ServeDir::new(&settings.dir),
            headers: security_headers(&settings.connects_to)?,
        })
    }

    /// The file `request` asks for (or a 404), with the security headers.
    pub fn serve<B>(&self, request: Request<B>) -> impl Future<Output = Result<Response<Body>, Infallible>> + use<B>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let headers = self.headers.clone();
        self.files.clone().oneshot(request).map_ok(move |response| {
            let mut response = response.map(Body::new);
            for (name, value) in &headers {
                response.headers_mut().insert(HeaderName::clone(name), value.clone());
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_the_page_and_its_named_origins_only() {
        let own = security_headers(&[]).expect("headers");
        let policy = own[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii");
        assert!(policy.contains("connect-src 'self';"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        let with_provider = security_headers(&["https://id.shop.example".to_owned()]).expect("headers");
        let policy = with_provider[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii");
        assert!(
            policy.contains("connect-src 'self' https://id.shop.example;"),
            "{policy}"
        );
    }
}
