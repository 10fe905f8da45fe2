//! Typed requests for the routes the tests call most, with the master key: each answers
//! (status, JSON body), so a test reads as what it does rather than as method and path.

use std::fmt::Display;

use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use crate::clients::send;
use crate::harness::TestApp;

impl TestApp {
    async fn call(&self, method: Method, path: &str) -> (u16, Value) {
        send(self.master(method, path)).await
    }

    async fn call_with(&self, method: Method, path: &str, body: &impl Serialize) -> (u16, Value) {
        send(self.master(method, path).json(body)).await
    }

    /// `GET /health`, without a key.
    pub async fn health(&self) -> (u16, Value) {
        send(self.request(Method::GET, "/health")).await
    }

    /// `GET /api/v1/clients`.
    pub async fn list_clients(&self) -> (u16, Value) {
        self.call(Method::GET, "/api/v1/clients").await
    }

    /// `POST /api/v1/clients`.
    pub async fn post_client(&self, body: &impl Serialize) -> (u16, Value) {
        self.call_with(Method::POST, "/api/v1/clients", body).await
    }

    /// `GET /api/v1/clients/{id}`.
    pub async fn get_client(&self, id: impl Display) -> (u16, Value) {
        self.call(Method::GET, &format!("/api/v1/clients/{id}"))
            .await
    }

    /// `PUT /api/v1/clients/{id}`.
    pub async fn put_client(&self, id: impl Display, body: &impl Serialize) -> (u16, Value) {
        self.call_with(Method::PUT, &format!("/api/v1/clients/{id}"), body)
            .await
    }

    /// `DELETE /api/v1/clients/{id}`.
    pub async fn delete_client(&self, id: impl Display) -> (u16, Value) {
        self.call(Method::DELETE, &format!("/api/v1/clients/{id}"))
            .await
    }

    /// `GET /api/v1/clients/{id}/keys`.
    pub async fn get_keys(&self, client: impl Display) -> (u16, Value) {
        self.call(Method::GET, &format!("/api/v1/clients/{client}/keys"))
            .await
    }

    /// `POST /api/v1/clients/{id}/keys`.
    pub async fn post_key(&self, client: impl Display, body: &impl Serialize) -> (u16, Value) {
        self.call_with(
            Method::POST,
            &format!("/api/v1/clients/{client}/keys"),
            body,
        )
        .await
    }

    /// `POST /api/v1/clients/{id}/pages`.
    pub async fn post_pages(&self, client: impl Display, body: &impl Serialize) -> (u16, Value) {
        self.call_with(
            Method::POST,
            &format!("/api/v1/clients/{client}/pages"),
            body,
        )
        .await
    }

    /// `GET /api/v1/pages/{id}`.
    pub async fn get_page(&self, id: impl Display) -> (u16, Value) {
        self.call(Method::GET, &format!("/api/v1/pages/{id}")).await
    }

    /// `GET /api/v1/pages/{id}/events`.
    pub async fn get_page_events(&self, id: impl Display) -> (u16, Value) {
        self.call(Method::GET, &format!("/api/v1/pages/{id}/events"))
            .await
    }

    /// `POST /api/v1/pages/{id}/refresh`.
    pub async fn refresh_page(&self, id: impl Display) -> (u16, Value) {
        self.call(Method::POST, &format!("/api/v1/pages/{id}/refresh"))
            .await
    }

    /// `POST /api/v1/clients/{id}/reprocess`.
    pub async fn post_reprocess(
        &self,
        client: impl Display,
        body: &impl Serialize,
    ) -> (u16, Value) {
        self.call_with(
            Method::POST,
            &format!("/api/v1/clients/{client}/reprocess"),
            body,
        )
        .await
    }

    /// `POST /api/v1/clients/{id}/webhooks`.
    pub async fn post_webhook(&self, client: impl Display, body: &impl Serialize) -> (u16, Value) {
        self.call_with(
            Method::POST,
            &format!("/api/v1/clients/{client}/webhooks"),
            body,
        )
        .await
    }

    /// `GET /api/v1/clients/{id}/webhooks`.
    pub async fn get_webhooks(&self, client: impl Display) -> (u16, Value) {
        self.call(Method::GET, &format!("/api/v1/clients/{client}/webhooks"))
            .await
    }

    /// `POST /api/v1/visits`.
    pub async fn post_visit(&self, body: &impl Serialize) -> (u16, Value) {
        self.call_with(Method::POST, "/api/v1/visits", body).await
    }

    /// `POST /api/v1/sitemap/parse`.
    pub async fn parse_sitemap(&self, body: &impl Serialize) -> (u16, Value) {
        self.call_with(Method::POST, "/api/v1/sitemap/parse", body)
            .await
    }

    /// `POST /api/v1/sitemap/import`.
    pub async fn import_sitemap(&self, body: &impl Serialize) -> (u16, Value) {
        self.call_with(Method::POST, "/api/v1/sitemap/import", body)
            .await
    }
}
