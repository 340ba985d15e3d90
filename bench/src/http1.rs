//! A lean load-generating client: one HTTP/1.1 keep-alive connection per worker, straight
//! on hyper, so the generator spends as little of the shared CPU as it can.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
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
    sender: SendRequest<Empty<Bytes>>,
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
            .send_request(request.body(Empty::new())?)
            .await?;
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    }
}
