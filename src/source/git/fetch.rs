//! Talking to the remote: the bare mirror (opened, or created private; the
//! ssh command for a key), the ref check that decides whether to fetch, the
//! fetch, and the credentials presented (read from their files on every
//! fetch, so rotated files are used).

use std::sync::atomic::{AtomicBool, Ordering};

use gix::ObjectId;
use gix::bstr::ByteSlice;

use super::{Auth, Error, Failure, Reader};

impl Reader {
    pub(super) fn open_mirror(&self) -> Result<gix::Repository, Error> {
        let path = &self.options.mirror;
        let mirror = |action, error| Error::Mirror {
            url: self.shown_url.clone(),
            action,
            path: path.clone(),
            error,
        };
        let mut repo = if path.join("HEAD").exists() {
            gix::open_opts(path, gix::open::Options::isolated())
                .map_err(|error| mirror("open", error))?
        } else {
            // Under the state dir, private like it (the mirror holds claims).
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o700,
            )
            .create(path)
            .map_err(|error| Error::CreateMirror {
                url: self.shown_url.clone(),
                path: path.clone(),
                error,
            })?;
            gix::init_bare(path).map_err(|error| mirror("create", error))?
        };
        repo.object_cache_size_if_unset(64 * 1024 * 1024);
        if let Auth::SshKey { key_file } = &self.options.auth {
            // The system ssh does the connecting, with this key only and
            // never a prompt; known hosts are learned on first contact.
            let command = format!(
                "ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
                key_file.display().to_string().replace('\'', "")
            );
            let ssh_command = |error| Error::SshCommand {
                url: self.shown_url.clone(),
                error,
            };
            let mut config = repo.config_snapshot_mut();
            config
                .set_value(&gix::config::tree::Core::SSH_COMMAND, command.as_str())
                .map_err(ssh_command)?;
            config.commit().map_err(ssh_command)?;
        }
        Ok(repo)
    }

    pub(super) fn credentials(&self) -> Result<Option<gix::sec::identity::Account>, Error> {
        account(&self.options.auth, |p| {
            crate::secret_file::read(p).map_err(|error| Error::Credentials {
                path: p.to_owned(),
                error,
            })
        })
    }

    /// Lists the branch on the remote and fetches it when it moved; returns
    /// the remote tip (or `None` when it did not move since `known`).
    pub(super) fn fetch(
        &self,
        repo: &gix::Repository,
        known: Option<ObjectId>,
    ) -> Result<Option<ObjectId>, Error> {
        let branch_ref = format!("refs/heads/{}", self.options.branch);
        let spec = format!("+{branch_ref}:{branch_ref}");
        let url = || self.shown_url.clone();
        let misconfigured = |error| Error::Remote {
            url: url(),
            cause: self.cause(error),
        };
        let remote = repo
            .remote_at(self.options.url.as_str())
            .map_err(misconfigured)?
            .with_refspecs(Some(spec.as_str()), gix::remote::Direction::Fetch)
            .map_err(misconfigured)?;
        let connection = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(|error| Error::Connect {
                url: url(),
                failure: Failure::of(&error),
                cause: self.cause(error),
            })?;
        let account = self.credentials()?;
        let connection = connection.with_credentials(answer(account));
        self.stats.ref_checks.fetch_add(1, Ordering::Relaxed);
        let prepare = connection
            .prepare_fetch(
                gix::progress::Discard,
                gix::remote::ref_map::Options::default(),
            )
            .map_err(|error| Error::ListRefs {
                url: url(),
                failure: Failure::of(&error),
                cause: self.cause(error),
            })?;
        let tip = prepare
            .ref_map()
            .remote_refs
            .iter()
            .find_map(|r| {
                let (name, target, peeled) = r.unpack();
                (name == branch_ref.as_bytes().as_bstr())
                    .then(|| peeled.or(target).map(ToOwned::to_owned))
                    .flatten()
            })
            .ok_or_else(|| Error::BranchMissing {
                url: url(),
                branch: self.options.branch.clone(),
            })?;
        if known == Some(tip) && repo.find_object(tip).is_ok() {
            return Ok(None); // unchanged: no fetch, no blob reads
        }
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let interrupt = AtomicBool::new(false);
        prepare
            .receive(gix::progress::Discard, &interrupt)
            .map_err(|error| Error::Receive {
                url: url(),
                failure: Failure::of(&error),
                cause: self.cause(error),
            })?;
        Ok(Some(tip))
    }
}

/// The account that token or basic auth presents over https (none for ssh
/// keys, which go through the ssh command, or no auth); each secret is read
/// from its file by `read`, again on every call, so rotated files are used.
pub fn account<E>(
    auth: &Auth,
    read: impl Fn(&std::path::Path) -> Result<String, E>,
) -> Result<Option<gix::sec::identity::Account>, E> {
    Ok(match auth {
        Auth::None | Auth::SshKey { .. } => None,
        Auth::Token {
            username,
            token_file,
        } => Some(gix::sec::identity::Account {
            username: username
                .clone()
                .unwrap_or_else(|| "x-access-token".to_owned()),
            password: read(token_file)?,
            oauth_refresh_token: None,
        }),
        Auth::Basic {
            username,
            password_file,
        } => Some(gix::sec::identity::Account {
            username: username.clone(),
            password: read(password_file)?,
            oauth_refresh_token: None,
        }),
    })
}

/// gix's credential helper for `account`: it answers a request for
/// credentials with the account (none without one), and takes no part in
/// storing or erasing them.
pub fn answer(
    account: Option<gix::sec::identity::Account>,
) -> impl FnMut(
    gix::credentials::helper::Action,
) -> gix::Result<Option<gix::credentials::protocol::Outcome>> {
    move |action| match (action, &account) {
        (gix::credentials::helper::Action::Get(ctx), Some(account)) => {
            Ok(Some(gix::credentials::protocol::Outcome {
                identity: account.clone(),
                next: ctx.into(),
            }))
        }
        _ => Ok(None),
    }
}
