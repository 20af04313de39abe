//! A connection's login: the first data frame, the token check, the failed-login limiter and
//! the refusals that close (bad frame, unknown token, wrong appid, disabled user).

use futures::StreamExt;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::session::Session;
use super::socket::DeviceStream;
use crate::auth::TokenHash;
use crate::protocol::{ClientFrame, CloseCode, ErrorCode, Login, check_depth};
use crate::state::now_millis;
use crate::store::{AuthFailure, Identity, StoreError};

/// How long the answer to a failed login is held once its address is over `login_attempts`:
/// with at most `max_anonymous_per_ip` sockets per address, this bounds the guesses one
/// address can make per second, and valid logins are never slowed.
const FAILED_LOGIN_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

impl Session {
    /// Handles the first frame. On failure the connection is already told why and closing.
    pub(super) async fn login(
        &mut self,
        first: Option<Result<Message, WsError>>,
    ) -> Result<(Identity, TokenHash, Login), &'static str> {
        let text = match first {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                self.refuse_binary().await;
                return Err("binary frame");
            }
            Some(Ok(_)) | None => return Err("closed before login"),
            Some(Err(err)) => {
                self.refuse_read_error(err).await;
                return Err("read error before login");
            }
        };
        let decoded = check_depth(text.as_bytes(), self.state.config.max_json_depth)
            .and_then(|()| ClientFrame::decode(&text));
        let login: Login = match decoded {
            Ok(ClientFrame::Login(login)) => login,
            Ok(_) => {
                let message =
                    "the first frame must be {\"op\":\"login\",\"token\":..,\"appid\":..}";
                self.refuse(
                    ErrorCode::LoginRequired,
                    message.into(),
                    CloseCode::AuthFailed,
                )
                .await;
                return Err("first frame not login");
            }
            Err(err) => {
                self.refuse(err.code, err.message, CloseCode::AuthFailed)
                    .await;
                return Err("bad login frame");
            }
        };
        let hash = TokenHash::of(&login.token);
        self.appid = login.appid.clone();
        match self
            .state
            .store
            .authenticate(hash, &login.appid, now_millis())
            .await
        {
            Ok(identity) => {
                let span = tracing::Span::current();
                span.record("user.uid", identity.uid);
                span.record("person.id", identity.person);
                tracing::info!(
                    "logged in uid {} (person {})",
                    identity.uid,
                    identity.person
                );
                Ok((identity, hash, login))
            }
            // Not a failed guess (the token is valid), so it does not count toward the limiter.
            Err(StoreError::AuthFailed(AuthFailure::Disabled)) => {
                tracing::info!("login refused: user disabled");
                self.refuse_disabled().await;
                Err("user disabled")
            }
            Err(StoreError::AuthFailed(why)) => {
                tracing::info!(reason = %why, "login refused");
                let attempts = self.state.config.login_attempts;
                if self
                    .state
                    .login_failures
                    .failed(crate::limits::ip_key(self.peer), attempts)
                {
                    // Over the limit: this failure is answered late and says why; a valid
                    // token from the same address is still let in at once.
                    tokio::time::sleep(FAILED_LOGIN_DELAY).await;
                    let message = format!(
                        "the token is not valid, and more than {attempts} logins from your address failed in the last minute, so failures are answered late; check the tokens your app uses"
                    );
                    self.refuse(ErrorCode::TooManyLogins, message, CloseCode::AuthFailed)
                        .await;
                    return Err("auth failed");
                }
                let message = match why {
                    crate::store::AuthFailure::WrongAppid => format!(
                        "the token was not issued for appid `{}`; log in with the appid the token was issued for",
                        login.appid
                    ),
                    _ => "the token is unknown, expired or revoked; ask your backend for a new one"
                        .into(),
                };
                self.refuse(ErrorCode::AuthFailed, message, CloseCode::AuthFailed)
                    .await;
                Err("auth failed")
            }
            Err(err) => {
                self.close_internal(&err, "login failed in the store").await;
                Err("store error at login")
            }
        }
    }

    /// The login of a disabled user: `user_disabled`, then close 4010.
    pub(super) async fn refuse_disabled(&self) {
        self.refuse(
            ErrorCode::UserDisabled,
            "this user is disabled by the app's backend; do not reconnect until it is enabled again"
                .into(),
            CloseCode::UserDisabled,
        )
        .await;
    }
}

/// The first text, binary or close frame; pings and pongs before login are skipped.
pub(super) async fn first_data_frame(
    stream: &mut DeviceStream,
) -> Option<Result<Message, WsError>> {
    loop {
        match stream.next().await {
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(frame))) => {
                let _ = futures::SinkExt::flush(stream).await;
                return Some(Ok(Message::Close(frame)));
            }
            other => return other,
        }
    }
}
