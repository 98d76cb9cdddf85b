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
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

/// Bytes buffered between the SFTP download and the HTTP response.
const PIPE_CAPACITY: usize = 1024 * 1024;

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

/// What a path is.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileInfoView {
    /// `file`, `directory`, `symlink` or `other`.
    #[schema(value_type = String, pattern = "^(file|directory|symlink|other)$")]
    pub kind: FileKind,
    /// Size in bytes.
    pub size: Option<u64>,
    /// Permission bits, e.g. 420 (0o644).
    pub permissions: Option<u32>,
    /// Last modification, Unix seconds.
    pub modified: Option<u32>,
    /// Owner's user id.
    pub uid: Option<u32>,
    /// Owner's group id.
    pub gid: Option<u32>,
}

impl From<FileInfo> for FileInfoView {
    fn from(info: FileInfo) -> Self {
        Self {
            kind: info.kind,
            size: info.size,
            permissions: info.permissions,
            modified: info.modified,
            uid: info.uid,
            gid: info.gid,
        }
    }
}

/// An entry of a directory.
#[derive(Debug, Serialize, ToSchema)]
pub struct DirEntryView {
    /// The name within the directory.
    pub name: String,
    /// Its attributes (a link's own).
    pub info: FileInfoView,
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
        (status = 200, body = [DirEntryView]),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    path: Result<Query<PathQuery>, QueryRejection>,
) -> Result<Json<Vec<DirEntryView>>, ApiError> {
    let path = query(path)?.path;
    let entries = client(&state, id).await?.list(&path).await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|DirEntry { name, info }| DirEntryView {
                name,
                info: info.into(),
            })
            .collect(),
    ))
}

/// What a path is (links followed).
#[utoipa::path(
    get, path = "/v1/accounts/{id}/sftp/stat", tag = "sftp",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"), PathQuery),
    responses(
        (status = 200, body = FileInfoView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn stat(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    path: Result<Query<PathQuery>, QueryRejection>,
) -> Result<Json<FileInfoView>, ApiError> {
    let path = query(path)?.path;
    Ok(Json(client(&state, id).await?.stat(&path).await?.into()))
}

/// Downloads a file, streamed. If the transfer breaks after the response
/// started, the body ends short of its `Content-Length`.
#[utoipa::path(
    get, path = "/v1/accounts/{id}/sftp/files", tag = "sftp",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"), PathQuery),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>, description = "The file's bytes"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn download(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    path: Result<Query<PathQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let path = query(path)?.path;
    let sftp = client(&state, id).await?;
    // Errors that can be told before the first byte get their status.
    let info = sftp.stat(&path).await?;
    if info.kind != FileKind::File {
        return Err(ApiError::invalid(format!("{path} is not a file")));
    }
    let (mut writer, reader) = tokio::io::duplex(PIPE_CAPACITY);
    let (account, file) = (sftp.clone(), path.clone());
    tokio::spawn(async move {
        if let Err(error) = account.read_to(&file, &mut writer).await {
            // Dropping the writer ends the body early; the client sees a short read.
            tracing::warn!(%error, "SFTP download broke off");
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
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody),
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
    let sftp = client(&state, id).await?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut reader = StreamReader::new(stream);
    let bytes = sftp.write_from(&path, &mut reader, WriteOptions { atomic }).await?;
    Ok(Json(UploadView { bytes }))
}

/// Removes a file.
#[utoipa::path(
    delete, path = "/v1/accounts/{id}/sftp/files", tag = "sftp",
    params(("id" = String, Path, description = "The account's id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"), PathQuery),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody),
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
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 415, body = ErrorBody), (status = 502, body = ErrorBody),
        (status = 504, body = ErrorBody),
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
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 504, body = ErrorBody),
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
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody),
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
