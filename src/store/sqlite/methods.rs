//! The [`Store`] methods of [`SqliteStore`]: each a thin wrapper that runs one function of the
//! files beside it on the writer (`write`, `write_committing`, `write_then`) or on a reader
//! (`read`), and says what a commit hands on to the sink.

use super::*;

#[async_trait]
impl Store for SqliteStore {
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.read(app::stats).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // The writer takes jobs in order, so this one commits after every earlier one.
        self.write(|_| Ok(())).await
    }

    async fn app_credentials(&self) -> Result<AppCredentials, StoreError> {
        self.read(app::app_credentials).await
    }

    async fn set_app_credentials(&self, creds: AppCredentials) -> Result<(), StoreError> {
        self.write(move |conn| app::set_app_credentials(conn, creds))
            .await
    }

    async fn useradd(&self, req: NewUser, now: Millis) -> Result<IssuedUser, StoreError> {
        self.useradd_active(req, None, now).await
    }

    async fn useradd_active(
        &self,
        req: NewUser,
        active: Option<bool>,
        now: Millis,
    ) -> Result<IssuedUser, StoreError> {
        let any_disabled = self.any_disabled.clone();
        let online = self.online.clone();
        self.write_committing(move |conn| {
            let (issued, markers) =
                devices::useradd(conn, req, active, &any_disabled, now, &online)?;
            Ok((issued, devices_committed(markers)))
        })
        .await
    }

    async fn devices(&self, who: UserKey) -> Result<PersonDevices, StoreError> {
        self.read(move |conn| users::devices(conn, &who)).await
    }

    async fn authenticate(
        &self,
        hash: TokenHash,
        appid: &str,
        now: Millis,
    ) -> Result<Identity, StoreError> {
        // Every login checks its token twice: one indexed lookup each, cheaper than the two
        // thread hand-offs of a blocking-pool read, so it runs right here when a reader
        // connection is free (never waiting for one), and on the pool otherwise.
        if let Some(found) =
            self.try_read_here(|conn| users::check_token(conn, &hash, Some(appid), now))
        {
            return found;
        }

        let appid = appid.to_string();
        self.read(move |conn| users::check_token(conn, &hash, Some(&appid), now))
            .await
    }

    async fn identify(&self, hash: TokenHash, now: Millis) -> Result<Identity, StoreError> {
        if let Some(found) = self.try_read_here(|conn| users::check_token(conn, &hash, None, now)) {
            return found;
        }
        self.read(move |conn| users::check_token(conn, &hash, None, now))
            .await
    }

    async fn resolve(&self, address: &str) -> Result<(PersonId, String), StoreError> {
        let address = address.to_string();
        self.read(move |conn| users::resolve(conn, address)).await
    }

    async fn person_of(&self, address: &str) -> Result<PersonId, StoreError> {
        let address = address.to_string();
        self.read(move |conn| users::person_of(conn, address)).await
    }

    async fn touch(&self, seen: Vec<(Uid, Millis)>) -> Result<(), StoreError> {
        self.write(move |conn| users::touch(conn, seen)).await
    }

    async fn append_message(&self, msg: NewMessage) -> Result<Appended, StoreError> {
        let any_disabled = self.any_disabled.clone();
        let outbox = self.outbox.clone();
        let wake = outbox.as_ref().and_then(|o| o.wake.clone());
        let (appended, _) = self
            .write_then(
                move |conn| {
                    let appended = log::append_message(conn, &msg)?;
                    // Checked after the append, in its savepoint (a refusal rolls it back): a
                    // retry of a message stored before the recipient was disabled is still
                    // answered as sent.
                    if !appended.duplicate && any_disabled.get() {
                        active::check_receives(conn, &msg.to)?;
                    }
                    // The push event commits with the message, or neither does.
                    let queued = match &outbox {
                        Some(opts) => outbox::on_message(conn, opts, msg.from.person, &appended)?,
                        None => false,
                    };
                    let committed = (!appended.duplicate).then(|| {
                        Committed::Message(CommittedMessage {
                            appended: appended.clone(),
                            sender: msg.from.person,
                            sender_uid: msg.from.uid,
                            sender_device: msg.from.device,
                            body: msg.body,
                            accepted: msg.accepted,
                        })
                    });
                    Ok(((appended, queued), committed))
                },
                move |&(_, queued): &(Appended, bool)| {
                    if let (true, Some(wake)) = (queued, &wake) {
                        wake();
                    }
                },
            )
            .await?;
        Ok(appended)
    }

    async fn head(&self, person: PersonId) -> Result<LogHead, StoreError> {
        // Read at every login: one indexed lookup, like the token check, so it too runs here
        // when a reader connection is free.
        if let Some(found) = self.try_read_here(|conn| log::log_head(conn, person)) {
            return found;
        }
        self.read(move |conn| log::log_head(conn, person)).await
    }

    async fn events_after(
        &self,
        person: PersonId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<LogEvent>, StoreError> {
        self.read(move |conn| log::events_after(conn, person, after, upto, limit))
            .await
    }

    async fn events_before(
        &self,
        person: PersonId,
        before: u64,
        limit: usize,
    ) -> Result<Vec<LogEvent>, StoreError> {
        self.read(move |conn| log::events_before(conn, person, before, limit))
            .await
    }

    async fn ack(&self, who: Identity, seq: u64, ts: Millis) -> Result<(), StoreError> {
        self.write_committing(move |conn| {
            let receipts = receipts::ack(conn, &who, seq, ts)?;
            Ok(((), Some(Committed::Receipts(receipts))))
        })
        .await
    }

    async fn mark_read(
        &self,
        who: Identity,
        peer: String,
        upto: u64,
        ts: Millis,
    ) -> Result<(), StoreError> {
        let outbox = self.outbox.clone();
        self.write_then(
            move |conn| {
                let markers = log::mark_read(conn, &who, &peer, upto, ts)?;
                let queued = match outbox {
                    Some(_) => outbox::on_read(conn, &who, &markers)?,
                    None => false,
                };
                Ok((queued, Some(Committed::Read(markers))))
            },
            {
                let wake = self.outbox.as_ref().and_then(|o| o.wake.clone());
                move |queued: &bool| {
                    if let (true, Some(wake)) = (*queued, &wake) {
                        wake();
                    }
                }
            },
        )
        .await
        .map(|_| ())
    }

    async fn append_call_record(&self, record: CallRecord) -> Result<(), StoreError> {
        let outbox = self.outbox.is_some();
        let wake = self.outbox.as_ref().and_then(|o| o.wake.clone());
        self.write_then(
            move |conn| {
                let markers = receipts::append_call_record(conn, &record)?;
                // The `call_ended` event commits with the record, or neither does.
                let queued = outbox && outbox::on_call_record(conn, &record, &markers)?;
                Ok((queued, Some(Committed::CallRecord(markers))))
            },
            move |queued: &bool| {
                if let (true, Some(wake)) = (*queued, &wake) {
                    wake();
                }
            },
        )
        .await
        .map(|_| ())
    }

    async fn set_profile(
        &self,
        person: PersonId,
        patch: serde_json::Map<String, serde_json::Value>,
        ts: Millis,
    ) -> Result<Vec<Marker>, StoreError> {
        self.write_committing(move |conn| {
            let markers = log::set_profile(conn, person, patch, ts)?;
            Ok((markers.clone(), Some(Committed::Profile(markers))))
        })
        .await
    }

    async fn profile(&self, address: &str) -> Result<(String, Box<RawValue>, u64), StoreError> {
        let address = address.to_string();
        self.read(move |conn| log::profile(conn, address)).await
    }

    async fn prune(
        &self,
        before_ts: Millis,
        ids_before_ts: Millis,
        max_events: usize,
    ) -> Result<usize, StoreError> {
        // Short transactions of a few hundred persons each (sends queue behind each one), until
        // `max_events` went or every person was looked at once since the first step.
        let started = *self.prune_after.lock().unwrap_or_else(|p| p.into_inner());
        let mut after = started;
        let mut restarted = started == 0;
        let mut removed = 0;
        loop {
            let want = max_events - removed;
            let step = self
                .write(move |tx| retention::prune_step(tx, after, before_ts, ids_before_ts, want))
                .await?;
            removed += step.removed;
            after = step.next;
            if step.wrapped {
                after = 0;
            }
            *self.prune_after.lock().unwrap_or_else(|p| p.into_inner()) = after;
            if removed >= max_events {
                return Ok(removed);
            }
            if step.wrapped {
                // A pass that began mid-way goes round once more to see the persons before
                // where it began (some twice: harmless).
                if restarted {
                    return Ok(removed);
                }
                restarted = true;
            }
        }
    }

    async fn own_blob(
        &self,
        sha256: &str,
        uploader: PersonId,
    ) -> Result<Option<BlobMeta>, StoreError> {
        let sha256 = sha256.to_string();
        self.read(move |conn| files::own_blob(conn, &sha256, uploader))
            .await
    }

    async fn uploaded_since(&self, uploader: PersonId, since: Millis) -> Result<u64, StoreError> {
        self.read(move |conn| files::uploaded_since(conn, uploader, since))
            .await
    }

    async fn add_file(&self, file: NewFile) -> Result<FileRecord, StoreError> {
        let blobs = self.blobs.clone();
        let doomed = self.doomed.clone();
        self.write(move |conn| files::add_file(conn, &blobs, &doomed, file))
            .await
    }

    async fn file(&self, id: &str, reader: Option<PersonId>) -> Result<FileRecord, StoreError> {
        let id = id.to_string();
        self.read(move |conn| files::readable_file(conn, &id, reader))
            .await
    }

    async fn prune_files(
        &self,
        unsent_before: Millis,
        max_files: usize,
    ) -> Result<usize, StoreError> {
        let doomed = self.doomed.clone();
        let blobs = self.blobs.clone();
        let (files, _) = self
            .write_then(
                {
                    let doomed = doomed.clone();
                    move |conn| {
                        files::prune_files(conn, &doomed, unsent_before, max_files)
                            .map(|pruned| (pruned, None))
                    }
                },
                move |(_, gone): &(usize, Vec<String>)| {
                    let mut doomed = doomed.lock().unwrap_or_else(|p| p.into_inner());
                    for sha256 in gone {
                        if doomed.remove(sha256) {
                            blobs.remove(sha256);
                        }
                    }
                },
            )
            .await?;
        Ok(files)
    }

    async fn url_key(&self) -> Result<[u8; 32], StoreError> {
        self.write(|tx| app::url_key(tx)).await
    }

    async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.read(move |conn| app::meta(conn, &key)).await
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(move |conn| app::set_meta(conn, &key, &value))
            .await
    }

    async fn tokendel(&self, who: UserKey) -> Result<Revoked, StoreError> {
        let online = self.online.clone();
        self.write_committing(move |conn| {
            let (revoked, markers) = devices::tokendel(conn, &who, devices::now(), &online)?;
            Ok((revoked, devices_committed(markers)))
        })
        .await
    }

    async fn userdel(&self, who: UserKey) -> Result<Removed, StoreError> {
        let online = self.online.clone();
        self.write_committing(move |conn| {
            let (removed, markers) = devices::userdel(conn, &who, devices::now(), &online)?;
            Ok((removed, devices_committed(markers)))
        })
        .await
    }

    async fn device_list(&self, person: PersonId) -> Result<Vec<DeviceEntry>, StoreError> {
        let online = self.online.clone();
        self.read(move |conn| devices::device_list(conn, person, &online(person)))
            .await
    }

    async fn revoke_device(
        &self,
        who: Identity,
        uid: Uid,
        now: Millis,
    ) -> Result<Revoked, StoreError> {
        let online = self.online.clone();
        self.write_committing(move |conn| {
            let (revoked, markers) = devices::revoke(conn, &who, uid, now, &online)?;
            Ok((revoked, devices_committed(markers)))
        })
        .await
    }

    async fn presence_check(
        &self,
        watcher: PersonId,
        target: PersonId,
        with_contacts: bool,
    ) -> Result<PresenceCheck, StoreError> {
        self.read(move |conn| presence::check(conn, watcher, target, with_contacts))
            .await
    }

    async fn presence_acl(&self, person: PersonId) -> Result<PresenceAcl, StoreError> {
        self.read(move |conn| presence::acl(conn, person)).await
    }

    async fn set_presence_acl(
        &self,
        person: PersonId,
        allow: Option<Vec<PersonId>>,
        deny: Option<Vec<PersonId>>,
    ) -> Result<PresenceAcl, StoreError> {
        self.write(move |conn| presence::set_acl(conn, person, allow, deny))
            .await
    }

    async fn outbox_peek(
        &self,
        limit: usize,
        with_body: bool,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        self.read(move |conn| outbox::peek(conn, limit, with_body))
            .await
    }

    async fn outbox_delete(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.write(move |conn| outbox::delete(conn, &ids)).await
    }

    async fn outbox_failed(
        &self,
        ids: Vec<i64>,
        next_at: Millis,
        error: String,
        window_start: Millis,
    ) -> Result<usize, StoreError> {
        self.write(move |conn| outbox::failed(conn, &ids, next_at, &error, window_start))
            .await
    }

    async fn outbox_bound(&self, max_pending: u64) -> Result<usize, StoreError> {
        self.write(move |conn| outbox::bound(conn, max_pending))
            .await
    }

    async fn outbox_status(&self, limit: usize) -> Result<OutboxStatus, StoreError> {
        self.read(move |conn| outbox::status(conn, limit)).await
    }

    async fn outbox_write(&self, event: NewOutboxEvent) -> Result<Option<i64>, StoreError> {
        if self.outbox.is_none() {
            return Ok(None);
        }
        let wake = self.outbox.as_ref().and_then(|o| o.wake.clone());
        self.write_then(
            move |conn| Ok((outbox::write(conn, &event)?, None)),
            move |row: &Option<i64>| {
                if let (Some(_), Some(wake)) = (row, &wake) {
                    wake();
                }
            },
        )
        .await
    }

    async fn outbox_presence_restart(&self, now: Millis) -> Result<usize, StoreError> {
        if self.outbox.is_none() {
            return Ok(0);
        }
        self.write(move |conn| outbox::presence_restart(conn, now))
            .await
    }

    async fn outbox_retry(&self, ids: Option<Vec<i64>>, now: Millis) -> Result<usize, StoreError> {
        self.write(move |conn| outbox::retry(conn, ids.as_deref(), now))
            .await
    }
}
