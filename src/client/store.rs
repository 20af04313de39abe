//! What a [`super::Session`] keeps between connections (and, with a durable store, between runs
//! of the app): the cursor it resumes from, and the sends not answered yet.

use std::sync::Mutex;

use serde_json::value::RawValue;

/// The last event the app handled, in which log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The seq to resume after (`since`).
    pub seq: u64,
    /// The epoch of the log it counts in (`epoch` of the `welcome`).
    pub epoch: String,
}

/// A send made but not answered yet.
#[derive(Debug, Clone)]
pub struct PendingSend {
    /// Its client id, kept for every resend.
    pub id: String,
    /// The recipient's address.
    pub to: String,
    /// The body.
    pub body: Box<RawValue>,
}

/// Storage for a session's cursor and pending sends. Calls come from the session's task, one at
/// a time; a durable implementation should write through before returning (a pending send must
/// be kept before its frame leaves).
pub trait SessionStore: Send + Sync + 'static {
    /// The cursor, if the device has one.
    fn cursor(&self) -> Option<Cursor>;
    /// Keeps the cursor.
    fn set_cursor(&self, cursor: Cursor);
    /// The unanswered sends, in the order they were made.
    fn pending(&self) -> Vec<PendingSend>;
    /// Keeps a send before its frame leaves.
    fn add_pending(&self, send: PendingSend);
    /// Forgets an answered send.
    fn remove_pending(&self, id: &str);
}

/// A store in memory: a session survives reconnects, not a restart of the app.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<(Option<Cursor>, Vec<PendingSend>)>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<Cursor>, Vec<PendingSend>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SessionStore for MemoryStore {
    fn cursor(&self) -> Option<Cursor> {
        self.lock().0.clone()
    }

    fn set_cursor(&self, cursor: Cursor) {
        self.lock().0 = Some(cursor);
    }

    fn pending(&self) -> Vec<PendingSend> {
        self.lock().1.clone()
    }

    fn add_pending(&self, send: PendingSend) {
        self.lock().1.push(send);
    }

    fn remove_pending(&self, id: &str) {
        self.lock().1.retain(|p| p.id != id);
    }
}
