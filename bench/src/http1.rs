//! A lean load-generating client: one HTTP/1.1 keep-alive connection per worker, straight
//! on hyper, so the generator spends as little of the shared CPU as it can (`GET` with a
//! bearer token, `POST` of a JSON body).

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Result;

/// `Bearer <token>`, built once so the load loop only clones it.
pub(crate) fn bearer(token: &str) -> Result<HeaderValue> {
    Ok(HeaderValue::from_str(&format!("Bearer {token}"))?)
}

/// One open connection to a loopback service.
#[derive(Debug)]
pub(crate) struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl Connection {
    /// Connects to `addr` (`TCP_NODELAY`, as load generators do).
    pub(crate) async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // Ends when the sender is dropped or the peer closes.
        tokio::spawn(connection);
        Ok(Self {
            sender,
            host: HeaderValue::from_str(&addr.to_string())?,
        })
    }

    /// `GET path` with `authorization`; reads the whole body and returns the status.
    pub(crate) async fn get(
        &mut self,
        path: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<StatusCode> {
        let mut request = Request::get(path).header(HOST, self.host.clone());
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        self.sender.ready().await?;
        let response = self
            .sender
            .send_request(request.body(Full::default())?)
            .await?;
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    }

    /// `GET path` with one extra header (`Cookie`, say); reads the whole body and returns
    /// the status.
    pub(crate) async fn get_with(
        &mut self,
        path: &str,
        name: &HeaderName,
        value: &HeaderValue,
    ) -> Result<StatusCode> {
        let request = Request::get(path)
            .header(HOST, self.host.clone())
            .header(name, value.clone())
            .body(Full::default())?;
        Ok(self.send(request).await?.0)
    }

    /// `POST path` with `headers` and `body`; returns the status, the response headers
    /// and the whole body.
    pub(crate) async fn post(
        &mut self,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        let mut request = Request::post(path).header(HOST, self.host.clone());
        for (name, value) in headers {
            request = request.header(name, value.clone());
        }
        self.send(request.body(Full::new(body))?).await
    }

    async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// `POST path` with a JSON `body`; returns the status and the whole response body.
    pub(crate) async fn post_json(
        &mut self,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        let request = Request::post(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(body))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
