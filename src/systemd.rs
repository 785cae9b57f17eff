//! systemd glue: readiness and status notifications, the watchdog, socket activation.
//! Every call is a no-op when pied does not run under systemd (no `NOTIFY_SOCKET`).

use std::os::fd::FromRawFd;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::daemon::Daemon;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

/// A one-line summary for `systemctl status`.
pub fn status_line(daemon: &Daemon) -> String {
    let state = if daemon.is_draining() {
        "draining"
    } else {
        "serving"
    };
    format!(
        "{state} on {}: {} running process(es)",
        daemon.socket_path.display(),
        daemon.running_count()
    )
}

pub fn ready(daemon: &Daemon) {
    let status = status_line(daemon);
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

pub fn reloading() {
    // Type=notify-reload wants the monotonic time with RELOADING=1; plain Type=notify
    // ignores it, so send it whenever it can be read.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("draining: stopping"),
    ]);
}

pub fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

/// The watchdog interval systemd asked for, if any.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog at half its interval and refreshes STATUS=, for as long as the
/// runtime runs: a wedged runtime stops the pings and systemd restarts pied.
pub async fn keepalive(daemon: std::sync::Arc<Daemon>) {
    let watchdog = watchdog_interval();
    let period = watchdog.map_or(Duration::from_secs(5), |w| {
        (w / 2).min(Duration::from_secs(5))
    });
    let mut last = String::new();
    loop {
        tokio::time::sleep(period).await;
        if watchdog.is_some() {
            notify(&[NotifyState::Watchdog]);
        }
        let line = status_line(&daemon);
        if line != last {
            status(&line);
            last = line;
        }
    }
}

/// The listening socket passed by systemd socket activation, if any.
pub fn activated_listener() -> std::io::Result<Option<std::os::unix::net::UnixListener>> {
    let mut fds = sd_notify::listen_fds()?;
    let Some(fd) = fds.next() else {
        return Ok(None);
    };
    // SAFETY: systemd passed this fd to us (LISTEN_PID matched our pid) and nothing else in
    // the process owns it.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}
