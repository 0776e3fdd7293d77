//! Vital signs in ([`Hospital::ingest`]): one message's observations — a FHIR Observation or
//! transaction Bundle, an HL7 v2 ORU^R01 — cleaned, stored all or nothing with the message,
//! scored with NEWS2, and the patient's escalation level set in the tree for the alarm
//! evaluator.
//!
//! # What the tree holds
//! `/medical/escalations/<patient>` ([`EscalationNode`]): the patient's current NEWS2 risk
//! *level* (low, low–medium, medium, high), the effective time of the score it comes from,
//! whether that score was complete, and the ward it is addressed to — no value, no score.
//! It only moves forward in effective time: an instance that scores an older moment (a late
//! observation) never overwrites a newer level, so two instances receiving data for one
//! patient agree, and the alarm (`signal = "news2"`, one per patient: its node is created
//! once) is never duplicated.
//!
//! # Which moment is scored
//! The message's newest effective time, and — if the patient has a newer score already (the
//! message arrived late) — that newer moment again, since the late value may fall in its
//! window ([`crate::vitals::STALE_AFTER_MS`]). Scores are stored per patient and moment,
//! replaced when recomputed.
//!
//! # Readings from the future
//! Ingestion refuses an effective time beyond the clock's horizon (now plus
//! [`crate::vitals::FUTURE_TOLERANCE_MS`]), but a store may hold one from before that check
//! (or from a server whose clock was wrong). Such a reading, its score and an escalation
//! node at its time are ignored: not taken as the newest moment, not rescored, and the
//! node is overwritten by a real score — else the patient's level would stay at the future
//! reading's for as long as it is stored, and no deterioration would raise an alarm.

use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::model::PatientId;
use crate::news2::Risk;
use crate::orders::Hospital;
use crate::store::{News2Record, ObservationQuery, RawMessage, StoreError};
use crate::tree::{self, Change};
use crate::vitals::{self, News2, Observation, RawObservation, STALE_AFTER_MS, beyond_horizon};
use crate::{Error, Result};

/// What `/medical/escalations/<patient>` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationNode {
    /// The NEWS2 clinical risk of the patient's latest score.
    pub risk: Risk,
    /// The effective time of that score, ms since the epoch.
    pub at_ms: i64,
    /// Whether every parameter was present (else the risk is a lower bound).
    pub complete: bool,
    /// The ward or department the escalation is addressed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ward: Option<String>,
}

/// What one message did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ingested {
    /// The observations as stored (ids; a duplicate with the id it was first stored with).
    pub observations: Vec<Observation>,
    /// The patients' scores computed, newest moment last per patient.
    pub scores: Vec<News2>,
}

/// The path of a patient's escalation node.
pub fn escalation_path(patient: &PatientId) -> String {
    format!("{}/{patient}", tree::ESCALATIONS)
}

impl Hospital {
    /// Ingests one message's observations (see the module docs).
    ///
    /// # Notable errors
    /// `Invalid` naming every refused observation (its index and why: an unknown unit, an
    /// impossible value or time) — then nothing is stored; `ConflictingValue` naming the
    /// observation if one that is not a correction has another value than the one stored
    /// under its key — nothing is stored; `NotFound` for a patient not registered;
    /// a store or coordination error (the store write is all or nothing; the escalation level
    /// is set again by the next observation if it failed).
    pub async fn ingest(
        &self,
        raw: &[RawObservation],
        message: &RawMessage,
        actor: impl Into<Actor>,
    ) -> Result<Ingested> {
        let actor = actor.into();
        if raw.is_empty() {
            return Err(Error::Invalid(
                "no vital sign observation in the message".into(),
            ));
        }
        let mut cleaned = Vec::with_capacity(raw.len());
        let mut refused = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            match vitals::clean(r, message.received_ms) {
                Ok(o) => cleaned.push(o),
                Err(e) => refused.push(format!("observation {}: {e}", i + 1)),
            }
        }
        if !refused.is_empty() {
            return Err(Error::Invalid(refused.join("; ")));
        }
        let mut patients: Vec<PatientId> = cleaned.iter().map(|o| o.patient.clone()).collect();
        patients.sort();
        patients.dedup();
        for p in &patients {
            if self.store().patient(p).await?.is_none() {
                return Err(Error::NotFound(format!("patient {p} is not registered")));
            }
        }
        let writes: Vec<_> = cleaned
            .into_iter()
            .zip(raw.iter().map(|r| r.revision))
            .collect();
        let stored = match self
            .store()
            .write_observations(&writes, message, actor.pending_audit())
            .await
        {
            Err(StoreError::Exists(why)) => return Err(Error::ConflictingValue(why)),
            r => r?,
        };
        actor.mark_audit_written();
        let mut scores = Vec::new();
        for p in &patients {
            let newest = stored
                .iter()
                .filter(|o| &o.patient == p)
                .map(|o| o.effective_ms)
                .max()
                .unwrap_or(message.received_ms);
            let latest = self
                .store()
                .news2_scores(p, i64::MIN, 1)
                .await?
                .first()
                .map(|r| r.news2.at_ms);
            let mut moments = vec![newest];
            // A newer score beyond the horizon is a future reading's: not rescored.
            let now = self.now_ms();
            if let Some(l) = latest.filter(|l| *l > newest && !beyond_horizon(*l, now)) {
                moments.push(l);
            }
            for at in moments {
                scores.push(self.score_and_escalate(p, at).await?);
            }
        }
        Ok(Ingested {
            observations: stored,
            scores,
        })
    }

    /// The NEWS2 score of `patient` at `at_ms` from the stored observations (stored, and the
    /// escalation level moved to it if it is the newest).
    async fn score_and_escalate(&self, patient: &PatientId, at_ms: i64) -> Result<News2> {
        let q = ObservationQuery {
            patient: Some(patient.clone()),
            codes: Vec::new(),
            since_ms: Some(at_ms - STALE_AFTER_MS + 1),
            until_ms: Some(at_ms),
            limit: Some(10_000),
        };
        let observations = self.store().observations(&q).await?;
        let settings = self.store().patient_settings(patient).await?;
        let n = vitals::news2_at(patient, at_ms, &observations, settings.spo2_scale);
        self.store()
            .insert_news2(&News2Record {
                news2: n.clone(),
                computed_ms: self.now_ms(),
            })
            .await?;
        let node = EscalationNode {
            risk: n.score.risk,
            at_ms,
            complete: n.score.complete(),
            ward: settings.ward.clone(),
        };
        // The level only moves forward, so a copy that already shows it (or a later one) means
        // the tree does too: no read. Only a change reads and writes the node.
        // A level at a time beyond the horizon is a future reading's (see the module docs):
        // any real score replaces it.
        let now = self.now_ms();
        let keep = move |cur: &EscalationNode, node: &EscalationNode| {
            cur == node || (cur.at_ms > node.at_ms && !beyond_horizon(cur.at_ms, now))
        };
        let model = self.escalation_model().await?;
        model.settle().await;
        if let Some(cached) = model.get(&escalation_path(patient))
            && let Ok(cur) = tree::from_json::<EscalationNode>("escalation", &cached.data)
            && keep(&cur, &node)
        {
            return Ok(n);
        }
        tree::read_modify_write(
            self.session().as_ref(),
            &escalation_path(patient),
            16,
            |current| {
                let node = node.clone();
                async move {
                    if let Some(data) = current {
                        let cur: EscalationNode = tree::from_json("escalation", &data)?;
                        // Only forward in effective time; the same moment recomputed may change
                        // it (a late value in its window).
                        if keep(&cur, &node) {
                            return Ok(Change::Keep(()));
                        }
                    }
                    Ok(Change::Write(tree::to_json(&node), ()))
                }
            },
        )
        .await?;
        Ok(n)
    }

    /// The patient's NEWS2 score now: at the newest observation's effective time, from what
    /// is stored (none if nothing was ever observed). An observation beyond the clock's
    /// horizon (now plus [`FUTURE_TOLERANCE_MS`](crate::vitals::FUTURE_TOLERANCE_MS)) is
    /// ignored: scored at its time, it would hide every real reading (see the module docs).
    pub async fn news2_now(&self, patient: &PatientId) -> Result<Option<News2>> {
        let now = self.now_ms();
        let q = ObservationQuery {
            patient: Some(patient.clone()),
            codes: Vec::new(),
            since_ms: None,
            until_ms: Some(now.saturating_add(vitals::FUTURE_TOLERANCE_MS)),
            limit: Some(1),
        };
        let Some(newest) = self.store().observations(&q).await?.pop() else {
            return Ok(None);
        };
        let at = newest.effective_ms.max(now);
        let q = ObservationQuery {
            since_ms: Some(at - STALE_AFTER_MS + 1),
            until_ms: Some(at),
            limit: Some(10_000),
            ..q
        };
        let observations = self.store().observations(&q).await?;
        let settings = self.store().patient_settings(patient).await?;
        Ok(Some(vitals::news2_at(
            patient,
            at,
            &observations,
            settings.spo2_scale,
        )))
    }
}
