//! Keeps the node connected: notices a lost connection, reconnects with
//! exponential backoff and jitter, and rebuilds the whole topology.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};

use super::Shared;
use super::session::Session;

/// Watches the current session; on failure, reconnects until it succeeds
/// or the transport closes.
pub(crate) async fn supervise(shared: Arc<Shared>) {
    // Sessions in a row that failed soon after they were built: something
    // keeps breaking them (say, a channel closed again and again), so each
    // reconnect waits longer instead of churning the broker every 100 ms.
    let mut failing = 0u32;
    loop {
        let Some(session) = shared.session.load_full() else {
            return;
        };
        let born = Instant::now();
        let error = tokio::select! {
            error = lost(&session) => error,
            never = keep_bound(&shared, &session) => match never {},
        };
        failing = if born.elapsed() < STABLE {
            failing + 1
        } else {
            0
        };
        if shared.is_closing() {
            return;
        }
        shared.session.store(None);
        session.abandon();
        tracing::warn!(broker = %session.broker, %error, "lost the broker connection; reconnecting");
        shared.inbound().connection_changed(false);
        if !reconnect(&shared, failing).await {
            return;
        }
    }
}

/// Binds the session's queues again every `rebind_every`, for as long as
/// the session lives; never resolves.
async fn keep_bound(shared: &Shared, session: &Session) -> std::convert::Infallible {
    // Supervised transports are started, so the names are known.
    let Ok(names) = shared.names() else {
        return std::future::pending().await;
    };
    let mut ticks = tokio::time::interval(shared.config.rebind_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: the session was just built whole.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let wanted = shared.wanted.lock().await;
        if let Err(error) = session.rebind(names, &wanted).await {
            // A closed channel raised the alarm; `lost` takes it from here.
            tracing::debug!(%error, "binding this node's queues again");
        }
    }
}

/// How often a node binds its queues again, by default.
pub(crate) const REBIND_EVERY: Duration = Duration::from_secs(30);

/// A session that lasts this long counts as healthy again.
const STABLE: Duration = Duration::from_secs(30);

/// The first reconnect delay after `failing` sessions in a row died young:
/// the configured minimum, doubled for each, up to the maximum.
fn first_delay(min: Duration, max: Duration, failing: u32) -> Duration {
    let factor = 2u32.saturating_pow(failing.saturating_sub(1).min(16));
    min.saturating_mul(factor).min(max).max(min)
}

/// Resolves when the session fails, with the reason: one of its two
/// connections failed, or the broker took a channel or consumer away.
async fn lost(session: &Session) -> String {
    // The client says so once; a connection that failed before anyone
    // listened shows only as not open, which is checked now and then.
    let main = session.connection.listen_network_io_failure();
    let membership = session.membership.listen_network_io_failure();
    let alarm = session.alarm.raised();
    tokio::pin!(main, membership, alarm);
    let failed = |network: bool, which: &str| match network {
        true => format!("the network connection failed ({which})"),
        false => format!("the broker closed the connection ({which})"),
    };
    loop {
        tokio::select! {
            network = &mut main => return failed(network, "main"),
            network = &mut membership => return failed(network, "membership"),
            reason = &mut alarm => return reason,
            () = tokio::time::sleep(CHECK_OPEN) => {
                if !session.connection.is_open() || !session.membership.is_open() {
                    return "the connection closed".to_string();
                }
            }
        }
    }
}

/// How often a session's connection is checked for having closed unseen.
const CHECK_OPEN: Duration = Duration::from_secs(1);

/// Tries until connected (`true`) or closing (`false`).
async fn reconnect(shared: &Arc<Shared>, failing: u32) -> bool {
    let min = first_delay(
        shared.config.reconnect_min,
        shared.config.reconnect_max,
        failing,
    );
    let delays = ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(shared.config.reconnect_max)
        .with_jitter()
        .without_max_times()
        .build();
    for (attempt, delay) in delays.enumerate() {
        tokio::time::sleep(delay).await;
        if shared.is_closing() {
            return false;
        }
        let wanted = shared.wanted.lock().await;
        let Some((names, inbound)) = shared.started.get() else {
            return false;
        };
        match Session::open(&shared.config, names, inbound, &wanted).await {
            Ok(session) => {
                let broker = session.broker.clone();
                shared.session.store(Some(Arc::new(session)));
                drop(wanted);
                tracing::info!(
                    broker,
                    attempts = attempt + 1,
                    "reconnected to the broker; topology restored"
                );
                inbound.connection_changed(true);
                return true;
            }
            Err(error) => {
                tracing::debug!(%error, attempt = attempt + 1, "reconnect failed");
            }
        }
    }
    false
}

/// The default backoff bounds.
pub(crate) const MIN_DELAY: Duration = Duration::from_millis(100);
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_that_keep_dying_young_back_off_further_each_time() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(10));
        // The first loss, or one after a healthy session: the minimum.
        assert_eq!(first_delay(min, max, 0), min);
        assert_eq!(first_delay(min, max, 1), min);
        assert_eq!(first_delay(min, max, 2), Duration::from_millis(200));
        assert_eq!(first_delay(min, max, 4), Duration::from_millis(800));
        assert_eq!(first_delay(min, max, 8), max);
        assert_eq!(first_delay(min, max, u32::MAX), max);
        // A maximum below the minimum never shortens the minimum.
        assert_eq!(first_delay(min, Duration::from_millis(50), 3), min);
    }
}
