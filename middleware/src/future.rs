//! The response future of [`SessionGuard`](crate::SessionGuard).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::context::AuthContext;
use crate::error::AuthError;

type Authenticating<ReqBody> = Pin<
    Box<dyn Future<Output = (Result<AuthContext, AuthError>, Request<ReqBody>)> + Send + 'static>,
>;

pin_project! {
    /// Authenticates (when the answer was not cached), then calls the inner service or
    /// answers with the refusal.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Authenticating {
            authenticating: Authenticating<ReqBody>,
            service: Option<S>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
        Rejected {
            response: Option<Response<Bytes>>,
        },
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn calling(future: S::Future) -> Self {
        Self {
            state: State::Calling { future },
        }
    }

    pub(crate) fn rejected(error: &AuthError, request_headers: &HeaderMap) -> Self {
        log_rejection(error);
        Self {
            state: State::Rejected {
                response: Some(error.to_response(request_headers)),
            },
        }
    }

    pub(crate) fn authenticating(authenticating: Authenticating<ReqBody>, service: S) -> Self {
        Self {
            state: State::Authenticating {
                authenticating,
                service: Some(service),
            },
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Authenticating {
                    authenticating,
                    service,
                } => {
                    let (outcome, mut request) = ready!(authenticating.as_mut().poll(cx));
                    match outcome {
                        Ok(context) => {
                            request.extensions_mut().insert(context);
                            let mut service = service.take().expect("polled after completion");
                            let future = service.call(request);
                            this.state.set(State::Calling { future });
                        }
                        Err(error) => {
                            log_rejection(&error);
                            let response = error.to_response(request.headers());
                            this.state.set(State::Rejected {
                                response: Some(response),
                            });
                        }
                    }
                }
                StateProj::Calling { future } => {
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                StateProj::Rejected { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::rejection)));
                }
            }
        }
    }
}

fn log_rejection(error: &AuthError) {
    tracing::debug!(
        reason = error.reason(),
        status = error.status().as_u16(),
        "request refused"
    );
}
