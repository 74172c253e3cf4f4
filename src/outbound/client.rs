//! The shared HTTP client (reqwest with rustls) and one provider call with its answer.
//! There is no default timeout in reqwest: every call here sets one.

use std::time::Duration;

/// How much of a provider's answer is kept (logs and error bodies).
pub const BODY_KEEP: usize = 4096;

/// The shared client: rustls, no automatic retries, a connect timeout.
///
/// # Errors
/// The TLS backend cannot be initialised.
pub fn build() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("utc-gateway/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// One request to a provider.
#[derive(Debug, Clone)]
pub struct ProviderCall {
    /// GET or POST.
    pub post: bool,
    /// Full URL.
    pub url: String,
    /// Headers (values from templates).
    pub headers: Vec<(String, String)>,
    /// Content type and body, for POST.
    pub body: Option<(&'static str, String)>,
    /// Whole-request timeout.
    pub timeout: Duration,
}

/// What the provider answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAnswer {
    /// HTTP status, when an answer came.
    pub status: Option<u16>,
    /// The first 4 KiB of the body, as text.
    pub body: String,
    /// Why no answer came (timeout, connection), when none did.
    pub error: Option<String>,
}

impl ProviderAnswer {
    /// A 2xx answer.
    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

fn cut(mut s: String) -> String {
    if s.len() > BODY_KEEP {
        let mut end = BODY_KEEP;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The URL without its query string (what logs may show).
pub fn without_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or_default().to_owned()
}

/// Sends one call; never fails: failures are described in the answer.
pub async fn send(client: &reqwest::Client, call: &ProviderCall) -> ProviderAnswer {
    let mut req = if call.post {
        client.post(&call.url)
    } else {
        client.get(&call.url)
    };
    req = req.timeout(call.timeout);
    for (k, v) in &call.headers {
        // a header value never spans lines, whatever a template put in it
        let v: String = v.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        req = req.header(k.as_str(), v);
    }
    if let Some((content_type, body)) = &call.body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, *content_type)
            .body(body.clone());
    }
    match req.send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            let body = res.text().await.unwrap_or_default();
            ProviderAnswer {
                status: Some(status),
                body: cut(body),
                error: None,
            }
        }
        Err(e) => {
            let why = if e.is_timeout() {
                "the provider did not answer in time"
            } else if e.is_connect() {
                "could not connect to the provider"
            } else {
                "the request to the provider failed"
            };
            ProviderAnswer {
                status: None,
                body: String::new(),
                error: Some(why.to_owned()),
            }
        }
    }
}
