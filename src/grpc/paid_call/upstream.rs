//! The provider's service that paid calls are forwarded to: `http://host:port` spoken as HTTP/2
//! cleartext (h2c), or `https://host:port` spoken as HTTP/2 over TLS (ALPN `h2`), verified against
//! the roots of the TLS configuration the caller gives (the system's, plus `upstream_ca_file`).
//! One pooled HTTP/2 connection carries every call; its windows bound what one call can hold.

use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::body::ForwardBody;

/// Longest wait for the TCP connection to the upstream service (and its TLS handshake).
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval of HTTP/2 pings on the upstream connection, and how long a ping may go unanswered
/// before the connection (and every call on it) is given up as broken.
pub const UPSTREAM_KEEPALIVE: Duration = Duration::from_secs(20);

/// The upstream URL is not an `http(s)://host:port` this gateway can call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid upstream {url:?}: {reason}")]
pub struct InvalidUpstream {
    pub url: String,
    pub reason: &'static str,
}

/// Where paid calls go.
pub(super) struct Upstream {
    scheme: Scheme,
    authority: Authority,
    client: Client<HttpsConnector<HttpConnector>, ForwardBody>,
}

impl Upstream {
    /// `tls` is the client configuration for an `https://` upstream (its ALPN is set to `h2` here);
    /// an `http://` upstream never uses it.
    pub(super) fn new(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Self, InvalidUpstream> {
        let invalid = |reason| InvalidUpstream { url: url.to_owned(), reason };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            _ => return Err(invalid("the scheme must be http:// (h2c) or https:// (HTTP/2 over TLS)")),
        };
        let authority = uri.authority().cloned().ok_or_else(|| invalid("no host"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("no path allowed: calls keep their own /package.Service/Method path"));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(UPSTREAM_CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match (&scheme, tls) {
            (s, Some(tls)) if *s == Scheme::HTTPS => {
                builder.with_tls_config((*tls).clone()).https_only().enable_http2().wrap_connector(connector)
            }
            (s, None) if *s == Scheme::HTTPS => {
                return Err(invalid("an https:// upstream needs a TLS configuration"));
            }
            // Plain h2c: the TLS side of the connector is never used (http only).
            _ => builder
                .with_tls_config(empty_client_config())
                .https_or_http()
                .enable_http2()
                .wrap_connector(connector),
        };
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .http2_keep_alive_interval(UPSTREAM_KEEPALIVE)
            .http2_keep_alive_timeout(UPSTREAM_KEEPALIVE)
            .timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Ok(Self { scheme, authority, client })
    }

    pub(super) fn uri(&self, path_and_query: PathAndQuery) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }

    pub(super) async fn send(
        &self,
        request: Request<ForwardBody>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(request).await
    }
}

/// A client configuration that trusts nothing, for the connector of a plain h2c upstream.
fn empty_client_config() -> rustls::ClientConfig {
    crate::tls::install_crypto_provider();
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}
