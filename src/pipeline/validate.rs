//! `converge validate`: stages 2–3 for every file, without a pass.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Pipeline {
    /// Stages 2–3 only (parse, schema, claim checks, policy) for every file:
    /// what `converge validate` reports. Returns the number of files and every
    /// diagnostic, conflicts included.
    /// With keys configured, a claim's secrets are decrypted and its MAC
    /// checked too (values dropped at once); without, such claims are
    /// counted in `Validated::secrets_unchecked`.
    #[must_use]
    pub fn validate(&self, snapshots: &[Snapshot], now: DateTime<Utc>) -> Validated {
        let files = every_file(snapshots);
        let empty = Inventory::default();
        let unchecked = AtomicUsize::new(0);
        let results: Vec<(Option<String>, &str, Vec<Diagnostic>)> = files
            .par_iter()
            .map(
                |(snapshot, file)| match self.check_file(snapshot, file, &empty, now) {
                    Ok((claim, _, sealed)) => {
                        let name = claim.environment_name.as_str();
                        let mut diagnostics = Vec::new();
                        if let Some(sealed) = sealed {
                            if self.secrets.configured() {
                                if let Err(e) = self.open_secrets(&sealed, name) {
                                    diagnostics.push(
                                        secrets_diagnostic(&file.path, &e)
                                            .for_environment(Some(name)),
                                    );
                                }
                            } else {
                                unchecked.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        (Some(name.to_owned()), file.path.as_str(), diagnostics)
                    }
                    Err(Rejected {
                        name, diagnostics, ..
                    }) => (name, file.path.as_str(), diagnostics),
                },
            )
            .collect();
        let mut diagnostics = load::conflicts(
            results
                .iter()
                .filter(|(_, _, d)| d.is_empty())
                .filter_map(|(n, f, _)| Some((n.as_deref()?, *f))),
        );
        diagnostics.extend(results.into_iter().flat_map(|(_, _, d)| d));
        diagnostics.sort_by(|a, b| a.file.cmp(&b.file).then_with(|| a.pointer.cmp(&b.pointer)));
        Validated {
            files: files.len(),
            diagnostics,
            secrets_unchecked: unchecked.into_inner(),
        }
    }

    /// Decrypts a claim's secrets and checks its MAC, counting the attempt.
    pub(super) fn open_secrets(
        &self,
        sealed: &Sealed,
        env: &str,
    ) -> Result<Secrets, crate::secret::OpenError> {
        self.decrypts.fetch_add(1, Ordering::Relaxed);
        crate::secret::open(
            sealed,
            self.secrets.as_ref(),
            env,
            self.renderer.fingerprint_key(),
        )
    }

    /// Services' own manifests for every claim that passes stages 2–3 and
    /// resolves against [`Pipeline::tags`]: fetched (into the cache),
    /// built, substituted with the claim's values and fenced, as a pass
    /// would; each claim's first problem as a diagnostic at its file (what
    /// `converge validate` adds when services have manifests). Returns the
    /// number of claims checked and the diagnostics.
    #[must_use]
    pub fn check_manifests(
        &self,
        snapshots: &[Snapshot],
        now: DateTime<Utc>,
    ) -> (usize, Vec<Diagnostic>) {
        if self.renderer.manifests().is_none() {
            return (0, Vec::new());
        }
        let claims = self.valid_claims(snapshots, now);
        let checked = AtomicUsize::new(0);
        let diagnostics = claims
            .par_iter()
            .filter_map(|(file, claim)| {
                let preset = self.renderer.presets().get(claim.environment_type);
                let requests = crate::resolve::requests(claim, &self.catalog);
                let versions = resolve(&requests, preset.use_dev_tags, &self.tags, None)
                    .ok()?
                    .versions;
                checked.fetch_add(1, Ordering::Relaxed);
                let expires_at = claim.expires_at(preset.ttl);
                let e = self
                    .renderer
                    .render(claim, &versions, expires_at, None)
                    .err()?;
                let (_, _, rule) = render_failure(&e);
                Some(
                    Diagnostic::new(file, e.pointer(), rule, e.to_string())
                        .for_environment(Some(claim.environment_name.as_str())),
                )
            })
            .collect();
        (checked.into_inner(), diagnostics)
    }

    /// The claims that pass stages 2–3, with their files (what
    /// `converge validate` checks versions of).
    #[must_use]
    pub fn valid_claims(&self, snapshots: &[Snapshot], now: DateTime<Utc>) -> Vec<(String, Claim)> {
        let files = every_file(snapshots);
        let empty = Inventory::default();
        files
            .par_iter()
            .filter_map(|(snapshot, file)| {
                let (claim, _, _) = self.check_file(snapshot, file, &empty, now).ok()?;
                Some((file.path.clone(), claim))
            })
            .collect()
    }
}

/// What `converge validate` found.
#[derive(Debug, Default)]
pub struct Validated {
    pub files: usize,
    pub diagnostics: Vec<Diagnostic>,
    /// Claims with secrets that could not be checked: no key is configured.
    pub secrets_unchecked: usize,
}
