//! Response headers every answer gets (a middleware on the whole [`crate::router`]):
//!
//! - `Cache-Control: no-store` on the API (`/api/…`, `/fhir/…`), the pages and `/readyz` —
//!   answers that may carry patient data must not be kept by a browser or a proxy cache.
//!   (The static assets keep their own `no-cache`: they hold no data.)
//! - On the dashboard's pages a Content-Security-Policy that allows only the server's own
//!   scripts, styles and connections (the page has no inline script), no framing, no base
//!   URI change; `X-Frame-Options: DENY` for older browsers.
//! - Everywhere: `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer` (a
//!   stream URL's `?access_token=` never leaves in a `Referer`).

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The dashboard's Content-Security-Policy.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                       connect-src 'self'; img-src 'self' data:; font-src 'self'; \
                       object-src 'none'; base-uri 'none'; form-action 'self'; \
                       frame-ancestors 'none'";

/// True for the dashboard's pages.
fn is_page(path: &str) -> bool {
    matches!(path, "/" | "/patient")
}

/// The middleware (see the module docs).
pub async fn secure(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if path.starts_with("/api/") || path.starts_with("/fhir") || path == "/readyz" || is_page(&path)
    {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if is_page(&path) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use medkeeper_hospital::store::SqliteStore;
    use tower::ServiceExt;

    use crate::{Limits, MemberInfo, ServerState};

    async fn get(path: &str) -> axum::response::Response {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let state = ServerState::new(
            MemberInfo {
                id: "t".into(),
                url: "http://127.0.0.1:1/".into(),
                started_ms: 0,
            },
            store,
            Limits::default(),
        );
        crate::router(state)
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    /// Issue 16 item 5 / issue 19 item 1: the pages carry a CSP (the page has no inline
    /// script) and no-store; answers of the API no-store; the assets keep their no-cache.
    #[tokio::test]
    async fn pages_and_api_answers_carry_the_security_headers() {
        for page in ["/", "/patient"] {
            let r = get(page).await;
            assert_eq!(r.status(), StatusCode::OK);
            let h = r.headers();
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], super::CSP);
            assert_eq!(h[header::CACHE_CONTROL], "no-store");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
        // Refused for want of a token, but still not to be cached.
        let r = get("/api/pools").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(r.headers()[header::REFERRER_POLICY], "no-referrer");
        let r = get("/assets/app.js").await;
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(r.headers().get(header::CONTENT_SECURITY_POLICY).is_none());
        assert_eq!(get("/favicon.ico").await.status(), StatusCode::NO_CONTENT);
        // The page itself has no inline script for the policy to refuse.
        let html = include_str!("../assets/index.html");
        assert!(
            !html.contains("<script>") && !html.contains(" onclick="),
            "inline script"
        );
    }
}
