//! Receiver authentication: `Authorization: Bearer <token>` or `Basic <base64(user:password)>`,
//! checked from the request headers before any of the body is read, compared in constant time
//! (`subtle`). Credentials come from a file (reloaded when it changes) and/or an environment
//! variable, never from the configuration file, and are never logged or printed.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use http::HeaderMap;
use subtle::ConstantTimeEq;
use tokio::task::JoinHandle;

use super::reload::{LoadError, Reloadable, load_and_watch};
use crate::config::{AuthConfig, AuthScheme};

/// Checks requests' credentials.
#[derive(Clone)]
pub(crate) struct Authenticator {
    scheme: AuthScheme,
    credentials: Arc<Reloadable<Credentials>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("scheme", &self.scheme)
            .field("credentials", &self.credentials.get().0.len())
            .finish()
    }
}

/// The accepted credentials: tokens, or `user:password` pairs. Never printed.
struct Credentials(Vec<Vec<u8>>);

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// No `Authorization` header of the configured scheme.
    Missing,
    /// Credentials that match none of the configured ones.
    Wrong,
}

impl AuthFailure {
    /// The message for the client.
    pub(crate) fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing credentials",
            AuthFailure::Wrong => "invalid credentials",
        }
    }
}

impl Authenticator {
    /// Loads the credentials `cfg` names (`env` read through `get_env`); an error names the
    /// file or variable. Abort the returned task to stop watching the file.
    pub(crate) fn load(
        cfg: &AuthConfig,
        get_env: impl Fn(&str) -> Option<String>,
    ) -> Result<(Self, JoinHandle<()>), LoadError> {
        let from_env = match &cfg.env {
            None => None,
            Some(name) => match get_env(name).map(|v| v.trim().to_owned()) {
                Some(v) if !v.is_empty() => Some(v.into_bytes()),
                _ => {
                    return Err(LoadError::Invalid(format!(
                        "receivers.auth.env: the variable {name} is not set"
                    )));
                }
            },
        };
        let scheme = cfg.scheme;
        let files: Vec<PathBuf> = cfg.file.iter().cloned().collect();
        let (credentials, task) = load_and_watch(
            "receivers.auth.file",
            files,
            cfg.reload_interval.0,
            move |contents| {
                let mut all: Vec<Vec<u8>> = from_env.iter().cloned().collect();
                for text in contents {
                    all.extend(parse_lines(text, scheme)?);
                }
                if all.is_empty() {
                    return Err(LoadError::Invalid(
                        "receivers.auth: no credentials in the file or variable".into(),
                    ));
                }
                Ok(Credentials(all))
            },
        )?;
        Ok((
            Self {
                scheme,
                credentials,
            },
            task,
        ))
    }

    /// The `WWW-Authenticate` challenge for a 401.
    pub(crate) fn challenge(&self) -> &'static str {
        match self.scheme {
            AuthScheme::Bearer => "Bearer realm=\"spanflow-relay\"",
            AuthScheme::Basic => "Basic realm=\"spanflow-relay\"",
        }
    }

    /// Checks the request's `Authorization` header.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .ok_or(AuthFailure::Missing)?
            .as_bytes();
        let (scheme, rest) = match value.iter().position(|b| *b == b' ') {
            Some(i) => (&value[..i], value[i + 1..].trim_ascii()),
            None => return Err(AuthFailure::Missing),
        };
        let presented = match self.scheme {
            AuthScheme::Bearer if scheme.eq_ignore_ascii_case(b"bearer") => rest.to_vec(),
            AuthScheme::Basic if scheme.eq_ignore_ascii_case(b"basic") => {
                base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .map_err(|_| AuthFailure::Wrong)?
            }
            _ => return Err(AuthFailure::Missing),
        };
        let credentials = self.credentials.get();
        // Every credential is compared, so the time taken does not say which one matched.
        let matched = credentials
            .0
            .iter()
            .fold(subtle::Choice::from(0), |any, c| {
                any | c.as_slice().ct_eq(presented.as_slice())
            });
        if bool::from(matched) {
            Ok(())
        } else {
            Err(AuthFailure::Wrong)
        }
    }
}

/// One credential per line; blank lines and `#` comments are skipped. A basic credential must
/// be `user:password`.
fn parse_lines(text: &[u8], scheme: AuthScheme) -> Result<Vec<Vec<u8>>, LoadError> {
    let mut out = Vec::new();
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        if scheme == AuthScheme::Basic && !line.contains(&b':') {
            return Err(LoadError::Invalid(format!(
                "receivers.auth.file line {}: expected user:password",
                i + 1
            )));
        }
        out.push(line.to_vec());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;
    use http::HeaderValue;
    use std::time::Duration;

    fn auth(scheme: AuthScheme, env_value: &str) -> Authenticator {
        let cfg = AuthConfig {
            scheme,
            file: None,
            env: Some("TOKEN".into()),
            reload_interval: HumanDuration(Duration::from_secs(60)),
        };
        let value = env_value.to_owned();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            Authenticator::load(&cfg, |_| Some(value.clone()))
                .expect("loads")
                .0
        })
    }

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("header"),
        );
        h
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let a = auth(AuthScheme::Bearer, "s3cret");
        assert_eq!(a.check(&with("Bearer s3cret")), Ok(()));
        assert_eq!(a.check(&with("bearer  s3cret ")), Ok(()));
        assert_eq!(a.check(&with("Bearer s3cre")), Err(AuthFailure::Wrong));
        assert_eq!(a.check(&with("Basic czNjcmV0")), Err(AuthFailure::Missing));
        assert_eq!(a.check(&HeaderMap::new()), Err(AuthFailure::Missing));
        assert!(!format!("{a:?}").contains("s3cret"));
    }

    #[test]
    fn basic_credentials_are_checked() {
        let a = auth(AuthScheme::Basic, "otel:pa55");
        let good = base64::engine::general_purpose::STANDARD.encode("otel:pa55");
        let bad = base64::engine::general_purpose::STANDARD.encode("otel:pass");
        assert_eq!(a.check(&with(&format!("Basic {good}"))), Ok(()));
        assert_eq!(
            a.check(&with(&format!("Basic {bad}"))),
            Err(AuthFailure::Wrong)
        );
        assert_eq!(a.check(&with("Basic !!!")), Err(AuthFailure::Wrong));
        assert_eq!(
            a.check(&with("Bearer otel:pa55")),
            Err(AuthFailure::Missing)
        );
    }

    #[test]
    fn credential_files_skip_comments_and_check_basic_lines() {
        let lines = parse_lines(b"# tokens\n\n a \nb\n", AuthScheme::Bearer).expect("parses");
        assert_eq!(lines, vec![b"a".to_vec(), b"b".to_vec()]);
        let err = parse_lines(b"user:pw\nnopassword\n", AuthScheme::Basic).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
