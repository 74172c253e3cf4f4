//! The disposition form of a connector and the validation of a submission against it
//! (SPEC 4). Validation is pure: the service applies the result in one transaction.

use super::ids::LeadId;
use super::lead::{LeadField, is_valid_email};
use super::phone::{Country, PhoneNumber};
use super::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A follow-up that is on or off, and mandatory or not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FollowUp {
    /// Offered in the form.
    pub enabled: bool,
    /// Must be filled in.
    pub mandatory: bool,
}

/// The custom-activity follow-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ActivityFollowUp {
    /// Offered in the form.
    pub enabled: bool,
    /// Must be filled in.
    pub mandatory: bool,
    /// Allowed activity types (empty: any non-empty type).
    pub types: Vec<String>,
}

/// The lead-field-update follow-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FieldUpdateFollowUp {
    /// Offered in the form.
    pub enabled: bool,
    /// At least one field must be written.
    pub mandatory: bool,
    /// Lead fields the agent may write.
    pub fields: Vec<String>,
}

/// A connector's disposition form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DispositionSettings {
    /// The lead field the value is written to.
    pub field: String,
    /// Allowed values (empty: any non-empty value).
    pub values: Vec<String>,
    /// Task follow-up.
    pub task: FollowUp,
    /// Custom activity follow-up.
    pub activity: ActivityFollowUp,
    /// Lead field updates.
    pub field_update: FieldUpdateFollowUp,
    /// Forwarding to the provider (SPEC 4), when configured.
    pub forward: Option<super::connector::ForwardSettings>,
}

impl Default for DispositionSettings {
    fn default() -> Self {
        Self {
            field: "Disposition".to_owned(),
            values: Vec::new(),
            task: FollowUp::default(),
            activity: ActivityFollowUp::default(),
            field_update: FieldUpdateFollowUp::default(),
            forward: None,
        }
    }
}

/// A task the agent asks for.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct TaskInput {
    /// What to do.
    #[serde(default)]
    pub subject: String,
    /// When (RFC 3339).
    #[serde(default)]
    pub due_at: String,
}

/// A custom activity the agent records.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct CustomActivityInput {
    /// One of the form's types.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Free text.
    #[serde(default)]
    pub note: Option<String>,
}

/// A disposition as submitted (raw input).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DispositionInput {
    /// The lead it applies to, when not the popup's.
    pub lead_id: Option<LeadId>,
    /// The chosen value.
    pub value: String,
    /// Notes.
    pub notes: Option<String>,
    /// Task follow-up.
    pub task: Option<TaskInput>,
    /// Custom activity follow-up.
    pub activity: Option<CustomActivityInput>,
    /// Lead field updates.
    pub fields: Option<BTreeMap<String, String>>,
}

/// A validated task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// What to do.
    pub subject: String,
    /// When.
    pub due_at: Timestamp,
}

/// A validated custom activity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomActivity {
    /// Its type.
    pub kind: String,
    /// Its note.
    pub note: Option<String>,
}

/// A disposition that passed validation: what to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disposition {
    /// The lead it applies to.
    pub lead_id: LeadId,
    /// The chosen value.
    pub value: String,
    /// Notes.
    pub notes: Option<String>,
    /// Lead writes, the disposition field first; phones already in E.164.
    pub writes: Vec<(LeadField, String)>,
    /// The task to create.
    pub task: Option<Task>,
    /// The custom activity to record.
    pub activity: Option<CustomActivity>,
}

/// Why a submission was refused: the field (snake_case JSON path) and a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DispositionError {
    /// The offending field, e.g. `task.due_at`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn refuse(field: impl Into<String>, message: impl Into<String>) -> DispositionError {
    DispositionError {
        field: field.into(),
        message: message.into(),
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

impl DispositionSettings {
    /// The form shown to agents: these settings without `forward`.
    pub fn form(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.remove("forward");
        }
        v
    }

    /// Checks a submission for a popup whose lead is `popup_lead` and whose other
    /// candidates are `candidates`; numbers written to `phone`/`mobile` are read with
    /// `country`.
    ///
    /// # Errors
    /// [`DispositionError`] naming the first field at fault.
    pub fn validate(
        &self,
        input: DispositionInput,
        popup_lead: LeadId,
        candidates: &[LeadId],
        country: Country,
    ) -> Result<Disposition, DispositionError> {
        let lead_id = match input.lead_id {
            None => popup_lead,
            Some(id) if id == popup_lead || candidates.contains(&id) => id,
            Some(_) => {
                return Err(refuse(
                    "lead_id",
                    "lead_id must be the popup's lead or one of its candidates",
                ));
            }
        };
        let value = input.value.trim().to_owned();
        if value.is_empty() {
            return Err(refuse("value", "value is mandatory"));
        }
        if !self.values.is_empty() && !self.values.contains(&value) {
            return Err(refuse("value", "value is not one of the form's values"));
        }
        let disposition_field = LeadField::parse(&self.field).map_err(|_| {
            refuse(
                "value",
                "the connector's disposition field cannot be written",
            )
        })?;
        let mut writes = vec![(disposition_field, value.clone())];

        let task = match (input.task, &self.task) {
            (Some(_), FollowUp { enabled: false, .. }) => {
                return Err(refuse("task", "this form has no task follow-up"));
            }
            (
                None,
                FollowUp {
                    mandatory: true, ..
                },
            ) => {
                return Err(refuse("task", "a task is mandatory"));
            }
            (None, _) => None,
            (Some(t), _) => {
                let subject = non_empty(Some(&t.subject))
                    .ok_or_else(|| refuse("task.subject", "task.subject is mandatory"))?
                    .to_owned();
                let due_at = Timestamp::parse_rfc3339(&t.due_at)
                    .map_err(|_| refuse("task.due_at", "task.due_at must be an RFC 3339 time"))?;
                Some(Task { subject, due_at })
            }
        };

        let activity = match input.activity {
            Some(_) if !self.activity.enabled => {
                return Err(refuse("activity", "this form has no custom activity"));
            }
            None if self.activity.mandatory => {
                return Err(refuse("activity", "a custom activity is mandatory"));
            }
            None => None,
            Some(a) => {
                let kind = non_empty(Some(&a.kind))
                    .ok_or_else(|| refuse("activity.type", "activity.type is mandatory"))?
                    .to_owned();
                if !self.activity.types.is_empty() && !self.activity.types.contains(&kind) {
                    return Err(refuse("activity.type", "activity.type is not allowed"));
                }
                Some(CustomActivity {
                    kind,
                    note: non_empty(a.note.as_deref()).map(str::to_owned),
                })
            }
        };

        let fields = input.fields.unwrap_or_default();
        if !fields.is_empty() && !self.field_update.enabled {
            return Err(refuse("fields", "this form has no field updates"));
        }
        if fields.is_empty() && self.field_update.mandatory {
            return Err(refuse("fields", "a field update is mandatory"));
        }
        for (name, raw) in fields {
            let path = format!("fields.{name}");
            if !self.field_update.fields.contains(&name) {
                return Err(refuse(path, "this field may not be written"));
            }
            let field = LeadField::parse(&name).map_err(|e| refuse(path.clone(), e.to_string()))?;
            let value = match field {
                LeadField::Phone | LeadField::Mobile => PhoneNumber::parse(&raw, country)
                    .map_err(|e| refuse(path.clone(), e.to_string()))?
                    .as_str()
                    .to_owned(),
                LeadField::Email if !is_valid_email(raw.trim()) => {
                    return Err(refuse(path, "not a valid email address"));
                }
                _ => raw.trim().to_owned(),
            };
            writes.push((field, value));
        }

        Ok(Disposition {
            lead_id,
            value,
            notes: non_empty(input.notes.as_deref()).map(str::to_owned),
            writes,
            task,
            activity,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn form() -> DispositionSettings {
        DispositionSettings {
            values: vec!["Interested".into(), "Not interested".into()],
            task: FollowUp {
                enabled: true,
                mandatory: true,
            },
            activity: ActivityFollowUp {
                enabled: true,
                mandatory: false,
                types: vec!["Demo".into()],
            },
            field_update: FieldUpdateFollowUp {
                enabled: true,
                mandatory: false,
                fields: vec!["stage".into(), "phone".into()],
            },
            ..DispositionSettings::default()
        }
    }

    fn input() -> DispositionInput {
        DispositionInput {
            value: "Interested".into(),
            task: Some(TaskInput {
                subject: "Call back".into(),
                due_at: "2030-01-01T10:00:00Z".into(),
            }),
            ..DispositionInput::default()
        }
    }

    fn check(i: DispositionInput) -> Result<Disposition, DispositionError> {
        let lead = LeadId::new();
        form().validate(i, lead, &[], Country::parse("IN").unwrap())
    }

    #[test]
    fn refusals_name_the_field_at_fault() {
        let cases: Vec<(DispositionInput, &str)> = vec![
            (
                DispositionInput {
                    value: "Maybe".into(),
                    ..input()
                },
                "value",
            ),
            (
                DispositionInput {
                    value: " ".into(),
                    ..input()
                },
                "value",
            ),
            (
                DispositionInput {
                    task: None,
                    ..input()
                },
                "task",
            ),
            (
                DispositionInput {
                    task: Some(TaskInput {
                        subject: "x".into(),
                        due_at: "tomorrow".into(),
                    }),
                    ..input()
                },
                "task.due_at",
            ),
            (
                DispositionInput {
                    activity: Some(CustomActivityInput {
                        kind: "Lunch".into(),
                        note: None,
                    }),
                    ..input()
                },
                "activity.type",
            ),
            (
                DispositionInput {
                    fields: Some([("email".to_owned(), "a@b".to_owned())].into()),
                    ..input()
                },
                "fields.email",
            ),
            (
                DispositionInput {
                    fields: Some([("phone".to_owned(), "12".to_owned())].into()),
                    ..input()
                },
                "fields.phone",
            ),
            (
                DispositionInput {
                    lead_id: Some(LeadId::new()),
                    ..input()
                },
                "lead_id",
            ),
        ];
        for (i, field) in cases {
            assert_eq!(check(i).unwrap_err().field, field);
        }
    }

    #[test]
    fn an_accepted_disposition_writes_the_field_then_the_updates() {
        let d = check(DispositionInput {
            fields: Some([("phone".to_owned(), "08611795988".to_owned())].into()),
            ..input()
        })
        .unwrap();
        assert_eq!(
            d.writes,
            vec![
                (LeadField::Custom("Disposition".into()), "Interested".into()),
                (LeadField::Phone, "+918611795988".into())
            ]
        );
        assert_eq!(d.task.unwrap().subject, "Call back");
    }
}
