//! The tower layer beside the auth layer that counts every call by method and
//! final gRPC code and times it. The code is read where gRPC puts it: the response
//! headers of a trailers-only answer (how tonic sends every unary error), else the
//! trailers at the end of the body; a body dropped before either (the client went
//! away mid-stream) is `CANCELLED`. Refused calls are counted too: this layer sits
//! outside authentication.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower::{Layer, Service};

#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for RpcMetrics<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    R: Body + Unpin,
{
    type Response = Response<MeteredBody<R>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let call = Call {
            method: method_label(request.uri().path()),
            started: Instant::now(),
            code: None,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let mut call = call;
            call.code = grpc_status(response.headers());
            let (parts, body) = response.into_parts();
            Ok(Response::from_parts(
                parts,
                MeteredBody {
                    inner: body,
                    call: Some(call),
                },
            ))
        })
    }
}

/// The served method's path, or `unknown`: a label never takes a value the
/// caller chose, so junk paths cannot grow the series without bound.
fn method_label(path: &str) -> &'static str {
    crate::auth::methods::METHODS
        .iter()
        .find(|(method, _)| *method == path)
        .map_or("unknown", |(method, _)| method)
}

struct Call {
    method: &'static str,
    started: Instant,
    /// From the response headers (a trailers-only answer).
    code: Option<Code>,
}

impl Call {
    fn record(self, code: Code) {
        crate::metrics::rpc(self.method, code, self.started.elapsed());
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// The response body, unchanged, recording the call once its status is known.
pub struct MeteredBody<R> {
    inner: R,
    call: Option<Call>,
}

impl<R> MeteredBody<R> {
    fn finish(&mut self, trailers: Option<&HeaderMap>) {
        if let Some(call) = self.call.take() {
            let code = trailers
                .and_then(grpc_status)
                .or(call.code)
                .unwrap_or(Code::Unknown);
            call.record(code);
        }
    }
}

impl<R: Body + Unpin> Body for MeteredBody<R> {
    type Data = R::Data;
    type Error = R::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish(Some(trailers));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = this.call.take() {
                    call.record(Code::Unknown);
                }
            }
            Poll::Ready(None) => this.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<R> Drop for MeteredBody<R> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            // a trailers-only answer needs no body polling; anything else
            // dropped unfinished lost its client
            let code = call.code.unwrap_or(Code::Cancelled);
            call.record(code);
        }
    }
}
