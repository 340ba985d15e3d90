//! The `portcullis` layer in front of services that are not the auth server: an axum
//! service and a tonic gRPC service, each trusting the real server's tokens and sessions.

mod foreign_service;
mod grpc;
