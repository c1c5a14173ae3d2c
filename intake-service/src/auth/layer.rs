//! The tower layer in front of every service: finds the method's rule in
//! [`super::methods`], authenticates the caller, refuses the call or passes it on
//! with the [`Principal`] in the request's extensions.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use tower::{Layer, Service};
use tracing::info;

use super::methods::{self, Access};
use super::{AuthError, Authenticator, Principal};
use crate::api::errors;

/// Told of every refused call (the audit trail records them).
pub trait DenialSink: Send + Sync + 'static {
    fn denied(&self, principal: Option<&Principal>, method: &str, error: &AuthError);
}

/// No-one listens: denials are only logged.
pub struct LogOnly;

impl DenialSink for LogOnly {
    fn denied(&self, _: Option<&Principal>, _: &str, _: &AuthError) {}
}

#[derive(Clone)]
pub struct AuthLayer {
    auth: Authenticator,
    sink: Arc<dyn DenialSink>,
}

impl AuthLayer {
    pub fn new(auth: Authenticator, sink: Arc<dyn DenialSink>) -> Self {
        Self { auth, sink }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
            sink: Arc::clone(&self.sink),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Authenticator,
    sink: Arc<dyn DenialSink>,
}

impl<S> AuthService<S> {
    /// The principal a call runs as, or why it may not run.
    fn decide<B>(
        &self,
        request: &Request<B>,
    ) -> Result<Option<Principal>, (Option<Principal>, AuthError)> {
        let path = request.uri().path();
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|value| value.as_bytes());
        let rule = methods::access(path);
        if rule == Some(Access::Open) {
            // health probes carry no token; one that does is still identified
            return Ok(self.auth.authenticate(authorization).ok());
        }
        let principal = self
            .auth
            .authenticate(authorization)
            .map_err(|e| (None, e))?;
        match rule {
            Some(access) if methods::allows(access, principal.roles()) => Ok(Some(principal)),
            // unknown paths are refused like a forbidden method (fail closed)
            _ => Err((
                Some(principal.clone()),
                AuthError::RoleNotAllowed {
                    principal: principal.name().to_string(),
                    method: path.to_string(),
                },
            )),
        }
    }
}

impl<S, B, R> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self.decide(&request) {
            Ok(principal) => {
                if let Some(principal) = principal {
                    request.extensions_mut().insert(principal);
                }
                // the clone that was polled ready serves this call (tower's rule)
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request))
            }
            Err((principal, error)) => {
                let method = request.uri().path();
                info!(
                    principal = principal.as_ref().map_or("-", |p| p.name()),
                    method,
                    denied = error.label(),
                    "call refused"
                );
                self.sink.denied(principal.as_ref(), method, &error);
                let status = errors::from_auth(&error);
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
