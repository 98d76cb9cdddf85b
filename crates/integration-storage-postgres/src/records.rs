//! Records as rows, and back.

use std::collections::BTreeMap;

use integration_core::crypto::SealedSecret;
use integration_core::storage::{PendingAuthorization, StoredAccount, StoredApiKey};
use integration_core::time::OffsetDateTime;
use integration_core::{AccountError, AccountHealth, AccountId, AccountStatus, EndUser, Error, ErrorKind, Result};
use sqlx::Row;
use sqlx::postgres::PgRow;

/// The columns an account is read from, in a fixed order.
pub(crate) const ACCOUNT_COLUMNS: &str = "id, integration, status, status_reason, parameters::text AS parameters, \
     secret_parameter_names, secret_parameter_values, credential_names, credential_values, \
     created_at_ns, updated_at_ns, revision, last_refresh_at_ns, last_error_code, last_error_at_ns, \
     consecutive_failures, next_check_at_ns, end_user_id, end_user_name";

/// The columns a pending authorization is read from.
pub(crate) const PENDING_COLUMNS: &str =
    "state, account, created_at_ns, expires_at_ns, data::text AS data, secret_names, secret_values";

/// A time as Unix nanoseconds; times past 2262 are stored as the last one
/// that fits.
pub(crate) fn nanos(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos()).unwrap_or(if time.year() < 1970 { i64::MIN } else { i64::MAX })
}

pub(crate) fn time(nanos: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .map_err(|_| Error::new(ErrorKind::Unreadable, "a stored time is out of range"))
}

/// A revision as PostgreSQL's `BIGINT`.
pub(crate) fn revision(revision: u64) -> Result<i64> {
    i64::try_from(revision).map_err(|_| Error::new(ErrorKind::Conflict, "the account's revision is too large"))
}

pub(crate) fn status_name(status: AccountStatus) -> &'static str {
    status.as_str()
}

fn status(name: &str) -> Result<AccountStatus> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|_| Error::new(ErrorKind::Unreadable, format!("unknown account status `{name}`")))
}

/// A map of plain values as JSON text.
pub(crate) fn json(values: &BTreeMap<String, String>) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "{}".to_owned())
}

/// Sealed secrets as a column of names and a column of bytes.
pub(crate) fn split(secrets: &BTreeMap<String, SealedSecret>) -> (Vec<String>, Vec<Vec<u8>>) {
    secrets
        .iter()
        .map(|(name, sealed)| (name.clone(), sealed.as_bytes().to_vec()))
        .unzip()
}

fn join(names: Vec<String>, values: Vec<Vec<u8>>) -> Result<BTreeMap<String, SealedSecret>> {
    if names.len() != values.len() {
        return Err(Error::new(ErrorKind::Unreadable, "sealed secrets without their names"));
    }
    Ok(names
        .into_iter()
        .zip(values.into_iter().map(SealedSecret::from_bytes))
        .collect())
}

fn read<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
    row: &'r PgRow,
    column: &str,
) -> Result<T> {
    row.try_get(column)
        .map_err(|_| Error::new(ErrorKind::Unreadable, format!("column `{column}` cannot be read")))
}

/// The account in `row`, or an `Unreadable` error naming it.
pub(crate) fn account_from_row(row: &PgRow) -> Result<StoredAccount> {
    let id: String = read(row, "id")?;
    let account = (|| {
        let parameters: String = read(row, "parameters")?;
        Ok(StoredAccount {
            id: AccountId::new(id.clone())?,
            integration: read(row, "integration")?,
            parameters: serde_json::from_str(&parameters)
                .map_err(|_| Error::new(ErrorKind::Unreadable, "the parameters are not a JSON object of strings"))?,
            secret_parameters: join(
                read(row, "secret_parameter_names")?,
                read(row, "secret_parameter_values")?,
            )?,
            credentials: join(read(row, "credential_names")?, read(row, "credential_values")?)?,
            status: status(&read::<String>(row, "status")?)?,
            status_reason: read(row, "status_reason")?,
            health: health_from_row(row)?,
            end_user: end_user_from_row(row)?,
            created_at: time(read(row, "created_at_ns")?)?,
            updated_at: time(read(row, "updated_at_ns")?)?,
            revision: u64::try_from(read::<i64>(row, "revision")?)
                .map_err(|_| Error::new(ErrorKind::Unreadable, "a negative revision"))?,
        })
    })();
    account.map_err(|error: Error| error.with_context("account", &id))
}

fn end_user_from_row(row: &PgRow) -> Result<Option<EndUser>> {
    let Some(id) = read::<Option<String>>(row, "end_user_id")? else {
        return Ok(None);
    };
    Ok(Some(EndUser {
        id,
        display_name: read(row, "end_user_name")?,
    }))
}

fn health_from_row(row: &PgRow) -> Result<AccountHealth> {
    let last_error = match (
        read::<Option<String>>(row, "last_error_code")?,
        read::<Option<i64>>(row, "last_error_at_ns")?,
    ) {
        (Some(code), Some(at)) => Some(AccountError { code, at: time(at)? }),
        _ => None,
    };
    Ok(AccountHealth {
        last_refresh_at: read::<Option<i64>>(row, "last_refresh_at_ns")?.map(time).transpose()?,
        last_error,
        consecutive_failures: u32::try_from(read::<i32>(row, "consecutive_failures")?)
            .map_err(|_| Error::new(ErrorKind::Unreadable, "a negative failure count"))?,
        next_check_at: read::<Option<i64>>(row, "next_check_at_ns")?.map(time).transpose()?,
    })
}

/// The health columns' values: last refresh, last error's code and time,
/// failures in a row, next check.
pub(crate) struct HealthValues {
    pub(crate) last_refresh_at: Option<i64>,
    pub(crate) last_error_code: Option<String>,
    pub(crate) last_error_at: Option<i64>,
    pub(crate) consecutive_failures: i32,
    pub(crate) next_check_at: Option<i64>,
}

pub(crate) fn health_values(health: &AccountHealth) -> HealthValues {
    HealthValues {
        last_refresh_at: health.last_refresh_at.map(nanos),
        last_error_code: health.last_error.as_ref().map(|error| error.code.clone()),
        last_error_at: health.last_error.as_ref().map(|error| nanos(error.at)),
        consecutive_failures: i32::try_from(health.consecutive_failures).unwrap_or(i32::MAX),
        next_check_at: health.next_check_at.map(nanos),
    }
}

/// The end user columns' values: the id, and the name to show.
pub(crate) struct EndUserValues {
    pub(crate) id: Option<String>,
    pub(crate) name: Option<String>,
}

pub(crate) fn end_user_values(end_user: Option<&EndUser>) -> EndUserValues {
    EndUserValues {
        id: end_user.map(|end_user| end_user.id.clone()),
        name: end_user.and_then(|end_user| end_user.display_name.clone()),
    }
}

/// The pending authorization in `row`.
pub(crate) fn pending_from_row(row: &PgRow) -> Result<PendingAuthorization> {
    let data: String = read(row, "data")?;
    Ok(PendingAuthorization {
        state: read(row, "state")?,
        account: AccountId::new(read::<String>(row, "account")?)?,
        created_at: time(read(row, "created_at_ns")?)?,
        expires_at: time(read(row, "expires_at_ns")?)?,
        data: serde_json::from_str(&data).map_err(|_| {
            Error::new(
                ErrorKind::Unreadable,
                "the pending authorization's data is not readable",
            )
        })?,
        secrets: join(read(row, "secret_names")?, read(row, "secret_values")?)?,
    })
}

/// The API key in `row`.
pub(crate) fn key_from_row(row: &PgRow) -> Result<StoredApiKey> {
    Ok(StoredApiKey {
        id: read(row, "id")?,
        name: read(row, "name")?,
        created_at: time(read(row, "created_at_ns")?)?,
        hash: read(row, "hash")?,
    })
}

/// A record kept as JSON in `column` of `row`.
/// The records of `rows` that parse, with a warning for each that does not:
/// for claims, where one unreadable record must not stop those behind it.
pub(crate) fn readable_records<T: serde::de::DeserializeOwned>(rows: &[PgRow], column: &str, what: &str) -> Vec<T> {
    rows.iter()
        .filter_map(|row| {
            json_record(row, column, what)
                .inspect_err(|error| tracing::warn!(%error, "skipping an unreadable {what}"))
                .ok()
        })
        .collect()
}

pub(crate) fn json_record<T: serde::de::DeserializeOwned>(row: &PgRow, column: &str, what: &str) -> Result<T> {
    let text: String = read(row, column)?;
    serde_json::from_str(&text)
        .map_err(|error| Error::new(ErrorKind::Unreadable, format!("cannot parse a stored {what}: {error}")))
}
