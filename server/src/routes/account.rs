//! `GET /account`: the "your devices" page, its script and its style sheet, compiled into
//! the binary from `assets/`; and the pages the links of account mail open,
//! `/account/verify` and `/account/reset`, with their script (a GET of either uses
//! nothing up: the token is posted only when the user presses the page's button). The page talks to the JSON routes with the cookie transport;
//! it loads nothing from anywhere else and runs no inline script, which its
//! `Content-Security-Policy` enforces.

use poem::http::StatusCode;
use poem::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use poem::{Response, Route, get, handler};

/// What the browser may load and do on the page: its own script, style and API only; no
/// inline script or style, no plug-ins, no framing, forms only to this origin.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// One file the page is made of.
pub(super) struct Asset {
    content_type: &'static str,
    body: &'static str,
}

/// Every file, by path.
pub(super) const FILES: [(&str, Asset); 7] = [
    (
        crate::mail::compose::ACCOUNT_PAGE,
        Asset {
            content_type: "text/html; charset=utf-8",
            body: include_str!("../../assets/account.html"),
        },
    ),
    (
        "/account/app.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            body: include_str!("../../assets/account.js"),
        },
    ),
    (
        "/account/style.css",
        Asset {
            content_type: "text/css; charset=utf-8",
            body: include_str!("../../assets/account.css"),
        },
    ),
    (
        crate::mail::compose::VERIFY_PAGE,
        Asset {
            content_type: "text/html; charset=utf-8",
            body: include_str!("../../assets/verify.html"),
        },
    ),
    (
        crate::mail::compose::RESET_PAGE,
        Asset {
            content_type: "text/html; charset=utf-8",
            body: include_str!("../../assets/reset.html"),
        },
    ),
    (
        "/account/link.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            body: include_str!("../../assets/link.js"),
        },
    ),
    (
        "/account/factors.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            body: include_str!("../../assets/factors.js"),
        },
    ),
];

/// `route` with the page's files added.
pub(super) fn routes(route: Route) -> Route {
    route
        .at(FILES[0].0, get(page))
        .at(FILES[1].0, get(script))
        .at(FILES[2].0, get(style))
        .at(FILES[3].0, get(verify_page))
        .at(FILES[4].0, get(reset_page))
        .at(FILES[5].0, get(link_script))
        .at(FILES[6].0, get(factors_script))
}

#[handler]
fn factors_script() -> Response {
    serve(&FILES[6].1)
}

#[handler]
fn verify_page() -> Response {
    serve(&FILES[3].1)
}

#[handler]
fn reset_page() -> Response {
    serve(&FILES[4].1)
}

#[handler]
fn link_script() -> Response {
    serve(&FILES[5].1)
}

#[handler]
fn page() -> Response {
    serve(&FILES[0].1)
}

#[handler]
fn script() -> Response {
    serve(&FILES[1].1)
}

#[handler]
fn style() -> Response {
    serve(&FILES[2].1)
}

fn serve(asset: &Asset) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, asset.content_type)
        .header("content-security-policy", CONTENT_SECURITY_POLICY)
        .header("x-frame-options", "DENY")
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .header(CACHE_CONTROL, "no-store")
        .body(asset.body)
}
