//! Background work on accounts nobody is using: OAuth 2.0 tokens refreshed
//! ahead of expiry and after idling, health checks, and accounts that keep
//! failing marked `needs_reauth`.

use std::sync::Arc;
use std::time::Duration;

use integration_core::definition::HealthCheckMethod;
use integration_core::secrecy::ExposeSecret;
use integration_core::storage::{AccountQuery, StoredAccount};
use integration_core::time::OffsetDateTime;
use integration_core::time::format_description::well_known::Rfc3339;
use integration_core::{AccountError, AccountHealth, AccountId, AccountStatus, ConnectedAccount, Result, Update};
use integration_http::token::ACCESS_TOKEN_EXPIRES_AT;
use integration_http::{Method, StatusCode};
use tokio::sync::Semaphore;

use crate::Integrations;

/// The credential that makes an OAuth 2.0 account refreshable.
const REFRESH_TOKEN: &str = "refresh_token";
/// Accounts read per page of a scan.
const PAGE: usize = 500;

/// How the scheduler works.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SchedulerSettings {
    /// How often the accounts are scanned for due work.
    pub scan_interval: Duration,
    /// Tokens expiring within this are refreshed.
    pub refresh_ahead: Duration,
    /// Accounts not refreshed for this long are refreshed (providers revoke
    /// refresh tokens left unused), and health-checked as often.
    pub idle_refresh: Duration,
    /// Failed refreshes in a row after which the account is marked
    /// `needs_reauth` and no longer refreshed.
    pub max_consecutive_failures: u32,
    /// Accounts worked on at once.
    pub concurrency: usize,
    /// How long one account's work may take before another scheduler (of
    /// this process or another gateway) may take it over.
    pub claim: Duration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            scan_interval: Duration::from_secs(60),
            refresh_ahead: Duration::from_secs(10 * 60),
            idle_refresh: Duration::from_secs(24 * 3600),
            max_consecutive_failures: 5,
            concurrency: 8,
            claim: Duration::from_secs(5 * 60),
        }
    }
}

impl SchedulerSettings {
    /// With `scan_interval`.
    pub fn scan_interval(mut self, interval: Duration) -> Self {
        self.scan_interval = interval;
        self
    }

    /// With `refresh_ahead`.
    pub fn refresh_ahead(mut self, ahead: Duration) -> Self {
        self.refresh_ahead = ahead;
        self
    }

    /// With `idle_refresh`.
    pub fn idle_refresh(mut self, idle: Duration) -> Self {
        self.idle_refresh = idle;
        self
    }

    /// With `max_consecutive_failures`.
    pub fn max_consecutive_failures(mut self, failures: u32) -> Self {
        self.max_consecutive_failures = failures.max(1);
        self
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerPass {
    /// Accounts worked on (claimed).
    pub worked: usize,
    /// Token refreshes that succeeded.
    pub refreshed: usize,
    /// Token refreshes that failed.
    pub failed: usize,
    /// Accounts marked `needs_reauth` by this pass (refused grant, failed
    /// health check, too many failures).
    pub needs_reauth: usize,
}

/// A running scheduler; dropping it stops it.
#[derive(Debug)]
pub struct SchedulerHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SchedulerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The work an account is due for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Refresh,
    HealthCheck,
}

impl Integrations {
    /// Runs the scheduler on the current tokio runtime until the handle is
    /// dropped: a pass every [`SchedulerSettings::scan_interval`].
    pub fn spawn_scheduler(&self, settings: SchedulerSettings) -> SchedulerHandle {
        let integrations = self.clone();
        let task = tokio::spawn(async move {
            loop {
                match integrations.run_scheduler_pass(&settings).await {
                    Ok(pass) if pass.worked > 0 => tracing::info!(
                        worked = pass.worked,
                        refreshed = pass.refreshed,
                        failed = pass.failed,
                        needs_reauth = pass.needs_reauth,
                        "scheduler pass"
                    ),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "the scheduler cannot read the accounts; trying again"),
                }
                tokio::time::sleep(settings.scan_interval).await;
            }
        });
        SchedulerHandle { task }
    }

    /// One pass over every account: the due ones are claimed in the store
    /// (so that gateways sharing it never do the same work) and worked on,
    /// at most [`SchedulerSettings::concurrency`] at once.
    ///
    /// # Behavior
    ///
    /// - A connected OAuth 2.0 account with a refresh token is refreshed
    ///   when its access token expires within `refresh_ahead`, or when it
    ///   was not refreshed for `idle_refresh`.
    /// - An account of an integration with a `health_check` gets that
    ///   request every `idle_refresh`; a 401 or 403 marks it `needs_reauth`.
    /// - After `max_consecutive_failures` failed refreshes in a row, the
    ///   account is marked `needs_reauth` with the last error, and no
    ///   longer refreshed. Before that, a failing account is tried again
    ///   after a backoff (1, 2, 4… minutes, at most `idle_refresh`), so that
    ///   failing accounts never crowd out healthy ones.
    /// - Each account's next look is kept on its record
    ///   ([`AccountHealth::next_check_at`]); an account being worked on is
    ///   claimed for [`SchedulerSettings::claim`].
    pub async fn run_scheduler_pass(&self, settings: &SchedulerSettings) -> Result<SchedulerPass> {
        let semaphore = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        let mut jobs = tokio::task::JoinSet::new();
        let mut query = AccountQuery::first(PAGE);
        query.status = Some(AccountStatus::Connected);
        loop {
            let now = OffsetDateTime::now_utc();
            let page = self.store().storage().accounts_page(&query).await?;
            for record in page.accounts.into_iter().flatten() {
                if self.work_for(&record).is_none() || record.health.next_check_at.is_some_and(|at| at > now) {
                    continue;
                }
                let Ok(permit) = Arc::clone(&semaphore).acquire_owned().await else {
                    break;
                };
                let integrations = self.clone();
                let settings = settings.clone();
                jobs.spawn(async move {
                    let _permit = permit;
                    let id = record.id.clone();
                    match tokio::time::timeout(settings.claim, integrations.work_on(record, &settings)).await {
                        Ok(Ok(pass)) => pass,
                        Ok(Err(error)) => {
                            tracing::warn!(account = %id, %error, "the scheduler's work on an account failed");
                            SchedulerPass::default()
                        }
                        Err(_) => {
                            tracing::warn!(account = %id, "the scheduler's work on an account took longer than its claim");
                            SchedulerPass::default()
                        }
                    }
                });
            }
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        let mut total = SchedulerPass::default();
        while let Some(done) = jobs.join_next().await {
            if let Ok(pass) = done {
                total.worked += pass.worked;
                total.refreshed += pass.refreshed;
                total.failed += pass.failed;
                total.needs_reauth += pass.needs_reauth;
            }
        }
        Ok(total)
    }

    /// What the scheduler may do for `record`, if anything.
    fn work_for(&self, record: &StoredAccount) -> Option<Work> {
        let integration = self.integration(&record.integration).ok()?;
        if record.status != AccountStatus::Connected {
            return None;
        }
        if integration.auth.type_name() == "oauth2" && record.credentials.contains_key(REFRESH_TOKEN) {
            Some(Work::Refresh)
        } else if integration.health_check.is_some() {
            Some(Work::HealthCheck)
        } else {
            None
        }
    }

    /// Claims `record`, does what is due, and sets its next look.
    async fn work_on(&self, record: StoredAccount, settings: &SchedulerSettings) -> Result<SchedulerPass> {
        let now = OffsetDateTime::now_utc();
        let mut pass = SchedulerPass::default();
        let account = self.store().get(&record.id).await?;
        // Claimed by another scheduler since the scan?
        if account.status() != AccountStatus::Connected || account.health().next_check_at.is_some_and(|at| at > now) {
            return Ok(pass);
        }
        // The claim: a compare-and-swap on the revision read, which one
        // scheduler wins.
        let mut claim = account.health().clone();
        claim.next_check_at = Some(now + settings.claim);
        let Update::Updated(account) = self
            .store()
            .update_account(
                &account,
                account.credentials().clone(),
                account.status(),
                account.status_reason().map(str::to_owned),
                claim,
            )
            .await?
        else {
            return Ok(pass);
        };
        pass.worked = 1;
        let integration = Arc::clone(self.integration(account.integration())?);
        let id = account.id().clone();

        if self.work_for(&record) == Some(Work::Refresh) && refresh_due(&account, now, settings) {
            match self.refresh(&id).await {
                Ok(_) => pass.refreshed = 1,
                Err(error) => {
                    pass.failed = 1;
                    tracing::warn!(account = %id, %error, "a scheduled refresh failed");
                }
            }
        }
        let account = self.store().get(&id).await?;
        if account.status() == AccountStatus::NeedsReauth {
            pass.needs_reauth = usize::from(pass.failed == 1);
            return Ok(pass);
        }
        let failures = account.health().consecutive_failures;
        if failures >= settings.max_consecutive_failures {
            let code = account
                .health()
                .last_error
                .as_ref()
                .map_or("unknown", |error| error.code.as_str());
            let reason = format!("{failures} refreshes in a row failed (last: {code}): connect the account again");
            self.mark_needs_reauth(account, &reason, None).await?;
            pass.needs_reauth = 1;
            return Ok(pass);
        }
        if let Some(check) = &integration.health_check {
            let method = match check.method {
                HealthCheckMethod::Get => Method::GET,
                HealthCheckMethod::Head => Method::HEAD,
            };
            let answer = match self.client(&id).await {
                Ok(client) => client
                    .request(method.clone(), &check.path)
                    .send()
                    .await
                    .map(|response| response.status()),
                Err(error) => Err(error),
            };
            match answer {
                Ok(status) if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN => {
                    let reason = format!(
                        "the health check {} {} answered {}: connect the account again",
                        method,
                        check.path,
                        status.as_u16()
                    );
                    let code = format!("health_check_{}", status.as_u16());
                    self.mark_needs_reauth(self.store().get(&id).await?, &reason, Some(&code))
                        .await?;
                    pass.needs_reauth = 1;
                    return Ok(pass);
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(account = %id, %error, "a health check failed"),
            }
        }
        let work = self.work_for(&record);
        self.schedule_next(&id, work, settings).await?;
        Ok(pass)
    }

    /// Marks the account `needs_reauth` for `reason`, with `code` as its
    /// last error when given; the compiled copy is dropped.
    async fn mark_needs_reauth(
        &self,
        mut account: ConnectedAccount,
        reason: &str,
        code: Option<&str>,
    ) -> Result<ConnectedAccount> {
        for _ in 0..5 {
            let mut health = account.health().clone();
            health.next_check_at = None;
            if let Some(code) = code {
                health.last_error = Some(AccountError {
                    code: code.to_owned(),
                    at: OffsetDateTime::now_utc(),
                });
            }
            match self
                .store()
                .update_account(
                    &account,
                    account.credentials().clone(),
                    AccountStatus::NeedsReauth,
                    Some(reason.to_owned()),
                    health,
                )
                .await?
            {
                Update::Updated(updated) => {
                    tracing::warn!(account = %updated.id(), reason, "the account needs to be connected again");
                    self.forget(updated.id());
                    return Ok(updated);
                }
                Update::Conflict(current) => account = current,
            }
        }
        Ok(account)
    }

    /// Sets when the scheduler looks at account `id` next: ahead of its
    /// token's expiry, after the idle interval, or after a backoff while it
    /// fails.
    async fn schedule_next(&self, id: &AccountId, work: Option<Work>, settings: &SchedulerSettings) -> Result<()> {
        for _ in 0..5 {
            let account = self.store().get(id).await?;
            let now = OffsetDateTime::now_utc();
            let mut health: AccountHealth = account.health().clone();
            health.next_check_at = Some(match work {
                Some(Work::Refresh) => next_check(&account, now, settings),
                _ => now + settings.idle_refresh,
            });
            match self
                .store()
                .update_account(
                    &account,
                    account.credentials().clone(),
                    account.status(),
                    account.status_reason().map(str::to_owned),
                    health,
                )
                .await?
            {
                Update::Updated(_) => return Ok(()),
                Update::Conflict(_) => continue,
            }
        }
        Ok(())
    }
}

/// When the access token of `account` expires, if it says.
fn expires_at(account: &ConnectedAccount) -> Option<OffsetDateTime> {
    let text = account.credentials().get(ACCESS_TOKEN_EXPIRES_AT)?;
    OffsetDateTime::parse(text.expose_secret(), &Rfc3339).ok()
}

/// When, before its expiry, `account`'s token is refreshed: the setting,
/// or half the token's lifetime when that is shorter (a 5-minute token is
/// not refreshed every pass).
fn ahead(account: &ConnectedAccount, expiry: OffsetDateTime, settings: &SchedulerSettings) -> Duration {
    let issued = account.health().last_refresh_at.unwrap_or(account.created_at());
    let lifetime: Duration = (expiry - issued).try_into().unwrap_or_default();
    settings.refresh_ahead.min(lifetime / 2)
}

/// Whether `account`'s tokens should be refreshed now.
fn refresh_due(account: &ConnectedAccount, now: OffsetDateTime, settings: &SchedulerSettings) -> bool {
    let expiring = expires_at(account).is_some_and(|at| at - ahead(account, at, settings) <= now);
    let last = account.health().last_refresh_at.unwrap_or(account.created_at());
    let idle = last + settings.idle_refresh <= now;
    expiring || idle || account.health().consecutive_failures > 0
}

/// The next look at `account`.
fn next_check(account: &ConnectedAccount, now: OffsetDateTime, settings: &SchedulerSettings) -> OffsetDateTime {
    let failures = account.health().consecutive_failures;
    if failures > 0 {
        let backoff = Duration::from_secs(60 << failures.min(16).saturating_sub(1)).min(settings.idle_refresh);
        return now + backoff;
    }
    let last = account.health().last_refresh_at.unwrap_or(account.created_at());
    let mut next = last + settings.idle_refresh;
    if let Some(expiry) = expires_at(account) {
        next = next.min(expiry - ahead(account, expiry, settings));
    }
    // Never sooner than a second: a clock or a token that disagrees with
    // itself does not make a busy loop.
    next.max(now + Duration::from_secs(1))
}
