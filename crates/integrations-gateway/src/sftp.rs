//! SFTP through an account: list, stat, download and upload (streamed),
//! rename, remove, mkdir, rmdir. Paths travel in the query string or the
//! JSON body, as the server's paths (absolute, or relative to the login
//! directory).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use integrations::AccountId;
use integrations::sftp::{DirEntry, FileInfo, FileKind, SftpClient, WriteOptions};
use serde::{Deserialize, Serialize};
use tokio_util::io::{ReaderStream, StreamReader};
use utoipa::{IntoParams, IntoResponses, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::metrics;

/// Bytes buffered between the SFTP download and the HTTP response.
const PIPE_CAPACITY: usize = 1024 * 1024;

/// The errors every SFTP route may answer, each with an [`ErrorBody`].
#[derive(IntoResponses)]
pub enum SftpErrors {
    /// An invalid id, path or body, or an account that is not SFTP.
    #[response(status = 400)]
    InvalidInput(#[to_schema] ErrorBody),
    /// No API key, or a wrong one.
    #[response(status = 401)]
    Unauthorized(#[to_schema] ErrorBody),
    /// Permission denied, login refused, or a host key mismatch.
    #[response(status = 403)]
    Refused(#[to_schema] ErrorBody),
    /// No such account or path.
    #[response(status = 404)]
    NotFound(#[to_schema] ErrorBody),
    /// What the server's file system refused: a path that exists, a
    /// directory that is not empty.
    #[response(status = 409)]
    Conflict(#[to_schema] ErrorBody),
    /// The connection to the server failed or broke.
    #[response(status = 502)]
    Transport(#[to_schema] ErrorBody),
    /// The server did not answer in time.
    #[response(status = 504)]
    Timeout(#[to_schema] ErrorBody),
}

/// A path on the server.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PathQuery {
    /// The path on the server: absolute, or relative to the login directory.
    #[param(min_length = 1)]
    pub path: String,
}

/// Where an upload goes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The path on the server.
    #[param(min_length = 1)]
    pub path: String,
    /// Write to a temporary name beside the file and rename it into place
    /// when complete (the default), or straight to the file.
    #[serde(default = "yes")]
    #[param(default = true)]
    pub atomic: bool,
}

fn yes() -> bool {
    true
}

/// A rename.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    /// The current path.
    #[schema(min_length = 1)]
    pub from: String,
    /// The new path; an existing file there is replaced where the server
    /// supports it (OpenSSH does).
    #[schema(min_length = 1)]
    pub to: String,
}

/// A directory to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MkdirRequest {
    /// The directory.
    #[schema(min_length = 1)]
    pub path: String,
    /// Create missing parents too; an existing directory is then no error.
    #[serde(default)]
    pub parents: bool,
}

/// How many bytes an upload wrote.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadView {
    /// Bytes written.
    pub bytes: u64,
}

async fn client(state: &AppState, id: String) -> Result<SftpClient, ApiError> {
    Ok(state.integrations.sftp(&AccountId::new(id)?).await?)
}

/// The integration of account `id`, for the byte counters' label.
async fn integration_of(state: &AppState, id: &str) -> String {
    let Ok(id) = AccountId::new(id) else {
        return "-".to_owned();
    };
    match state.integrations.store().storage().account(&id).await {
        Ok(Some(account)) => account.integration,
        _ => "-".to_owned(),
    }
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| ApiError::invalid(format!("invalid query: {}", rejection.body_text())))
}

/// Lists a directory: entries without `.` and `..`, sorted by name.
#[utoipa::path(
    get, path = "/v1/accounts/{id}/sftp/entries", tag = "sftp",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"), PathQuery),
    responses(
        (status = 200, body = [DirEntry]),
        SftpErrors,
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    path: Result<Query<PathQuery>, QueryRejection>,
) -> Result<Json<Vec<DirEntry>>, ApiError> {
    let path = query(path)?.path;
    Ok(Json(client(&state, id).await?.list(&path).await?))
}

/// What a path is (links followed).
#[utoipa::path(
    get, path = "/v1/accounts/{id}/sftp/stat", tag = "sftp",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"), PathQuery),
    responses(
        (status = 200, body = FileInfo),
        SftpErrors,
    ),
    security(("api_key" = []))
)]
pub async fn stat(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    path: Result<Query<PathQuery>, QueryRejection>,
) -> Result<Json<FileInfo>, ApiError> {
    let path = query(path)?.path;
    Ok(Json(client(&state, id).await?.stat(&path).await?))
}

/// Downloads a file, streamed. If the transfer breaks after the response
/// started, the body ends short of its `Content-Length`.
#[utoipa::path(
    get, path = "/v1/accounts/{id}/sftp/files", tag = "sftp",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"), PathQuery),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>, description = "The file's bytes"),
        SftpErrors,
    ),
    security(("api_key" = []))
)]
pub async fn download(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    path: Result<Query<PathQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let path = query(path)?.path;
    let integration = integration_of(&state, &id).await;
    let sftp = client(&state, id).await?;
    // Errors that can be told before the first byte get their status.
    let info = sftp.stat(&path).await?;
    if info.kind != FileKind::File {
        return Err(ApiError::invalid(format!("{path} is not a file")));
    }
    let (mut writer, reader) = tokio::io::duplex(PIPE_CAPACITY);
    let (account, file) = (sftp.clone(), path.clone());
    tokio::spawn(async move {
        match account.read_to(&file, &mut writer).await {
            Ok(bytes) => metrics::sftp_bytes(&integration, "out", bytes),
            // Dropping the writer ends the body early; the client sees a short read.
            Err(error) => tracing::warn!(%error, "SFTP download broke off"),
        }
    });
    let mut response = Body::from_stream(ReaderStream::with_capacity(reader, 256 * 1024)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(size) = info.size {
        headers.insert(header::CONTENT_LENGTH, size.into());
    }
    Ok(response)
}

/// Uploads the request body to a file, streamed.
#[utoipa::path(
    put, path = "/v1/accounts/{id}/sftp/files", tag = "sftp",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"), UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes"),
    responses(
        (status = 200, body = UploadView),
        SftpErrors,
    ),
    security(("api_key" = []))
)]
pub async fn upload(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    upload: Result<Query<UploadQuery>, QueryRejection>,
    body: Body,
) -> Result<Json<UploadView>, ApiError> {
    let UploadQuery { path, atomic } = query(upload)?;
    let integration = integration_of(&state, &id).await;
    let sftp = client(&state, id).await?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut reader = StreamReader::new(stream);
    let bytes = sftp.write_from(&path, &mut reader, WriteOptions { atomic }).await?;
    metrics::sftp_bytes(&integration, "in", bytes);
    Ok(Json(UploadView { bytes }))
}

/// Removes a file.
#[utoipa::path(
    delete, path = "/v1/accounts/{id}/sftp/files", tag = "sftp",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"), PathQuery),
    responses(
        (status = 204, description = "Removed"),
        SftpErrors,
    ),
    security(("api_key" = []))
)]
pub async fn remove(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    path: Result<Query<PathQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let path = query(path)?.path;
    client(&state, id).await?.remove(&path).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Renames or moves a file or directory.
#[utoipa::path(
    post, path = "/v1/accounts/{id}/sftp/rename", tag = "sftp",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    request_body = RenameRequest,
    responses(
        (status = 204, description = "Renamed"),
        (status = 415, body = ErrorBody, description = "The body is not JSON"),
        SftpErrors,
    ),
    security(("api_key" = []))
)]
pub async fn rename(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Result<Json<RenameRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(RenameRequest { from, to }) = request?;
    client(&state, id).await?.rename(&from, &to).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates a directory.
#[utoipa::path(
    post, path = "/v1/accounts/{id}/sftp/directories", tag = "sftp",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    request_body = MkdirRequest,
    responses(
        (status = 204, description = "Created (or, with `parents`, already there)"),
        (status = 415, body = ErrorBody, description = "The body is not JSON"),
        SftpErrors,
    ),
    security(("api_key" = []))
)]
pub async fn mkdir(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Result<Json<MkdirRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(MkdirRequest { path, parents }) = request?;
    client(&state, id).await?.mkdir(&path, parents).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes an empty directory.
#[utoipa::path(
    delete, path = "/v1/accounts/{id}/sftp/directories", tag = "sftp",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"), PathQuery),
    responses(
        (status = 204, description = "Removed"),
        SftpErrors,
    ),
    security(("api_key" = []))
)]
pub async fn rmdir(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    path: Result<Query<PathQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let path = query(path)?.path;
    client(&state, id).await?.rmdir(&path).await?;
    Ok(StatusCode::NO_CONTENT)
}
