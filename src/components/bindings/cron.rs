//! `cron`: Dapr's cron input binding. On every time its `schedule` names,
//! an event with no data and metadata `timeZone` and `readTimeUTC` goes to
//! the app.
//!
//! A schedule has six fields (seconds first: `*/5 * * * * *`), or five
//! (seconds are then 0), or is `@every <duration>` (`@every 2s`), or one
//! of `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
//! `@midnight`, `@hourly`; times are UTC.
//!
//! Metadata: [`CronKeys`].

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use super::{Binding, BindingCommon, Deliveries, Delivery, Message, NoAck};
use crate::components::meta::{self, Section};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, MetadataError, TypeEntry};

pub const TYPE: TypeEntry<dyn Binding> = TypeEntry::of::<CronType>();

pub struct CronType;

impl ComponentType<dyn Binding> for CronType {
    const NAME: &'static str = "cron";
    type Metadata = (CronKeys, BindingCommon);

    fn build(
        _ctx: BuildContext,
        (keys, _): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn Binding>, BuildError>> {
        async move {
            let schedule = Schedule::parse(&keys.schedule).map_err(BuildError)?;
            Ok(Arc::new(CronBinding { schedule }) as Arc<dyn Binding>)
        }
        .boxed()
    }
}

/// What `cron` reads from its metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronKeys {
    /// When events fire. Required.
    #[serde(deserialize_with = "meta::non_empty")]
    pub schedule: String,
}

impl Section for CronKeys {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        if let Err(e) = Schedule::parse(&self.schedule) {
            errors.push(MetadataError::new("schedule", e));
        }
    }
}

#[derive(Clone, Debug)]
enum Schedule {
    Every(Duration),
    Cron(Box<cron::Schedule>),
}

impl Schedule {
    fn parse(text: &str) -> Result<Schedule, String> {
        let mut text = text.trim();
        // Dapr's time zone prefix: only UTC is kept here.
        for prefix in ["CRON_TZ=", "TZ="] {
            if let Some(rest) = text.strip_prefix(prefix) {
                let (zone, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                if zone != "UTC" && zone != "Etc/UTC" {
                    return Err(format!(
                        "invalid schedule format '{text}': only the UTC time zone is supported"
                    ));
                }
                text = rest.trim();
            }
        }
        if let Some(every) = text.strip_prefix("@every ") {
            let every = humantime::parse_duration(every.trim())
                .map_err(|e| format!("invalid schedule format '{text}': {e}"))?;
            if every.is_zero() {
                return Err(format!(
                    "invalid schedule format '{text}': the interval must be longer than zero"
                ));
            }
            return Ok(Schedule::Every(every));
        }
        let expression = match text {
            "@annually" => "@yearly".to_owned(),
            "@midnight" => "@daily".to_owned(),
            _ if text.starts_with('@') => text.to_owned(),
            _ => match text.split_whitespace().count() {
                5 => format!("0 {text}"),
                6 => text.to_owned(),
                n => return Err(format!("expected 5 to 6 fields, found {n}: {text}")),
            },
        };
        cron::Schedule::from_str(&expression)
            .map(|s| Schedule::Cron(Box::new(s)))
            .map_err(|e| format!("invalid schedule format '{text}': {e}"))
    }

    /// How long until the next firing.
    fn wait(&self) -> Option<Duration> {
        match self {
            Schedule::Every(every) => Some(*every),
            Schedule::Cron(schedule) => {
                let next = schedule.upcoming(chrono::Utc).next()?;
                Some((next - chrono::Utc::now()).to_std().unwrap_or_default())
            }
        }
    }
}

pub struct CronBinding {
    schedule: Schedule,
}

#[async_trait::async_trait]
impl Component for CronBinding {
    async fn health_check(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl Binding for CronBinding {
    fn operations(&self) -> Vec<&str> {
        vec![]
    }

    fn is_input(&self) -> bool {
        true
    }

    async fn read(&self) -> Result<Deliveries, ComponentError> {
        let schedule = self.schedule.clone();
        Ok(futures::stream::unfold(schedule, |schedule| async move {
            let wait = schedule.wait()?;
            tokio::time::sleep(wait).await;
            let now = chrono::Utc::now();
            let message = Message {
                topic: String::new(),
                data: Vec::new(),
                metadata: [
                    ("timeZone".to_owned(), "UTC".to_owned()),
                    (
                        "readTimeUTC".to_owned(),
                        now.format("%Y-%m-%d %H:%M:%S%.9f +0000 UTC").to_string(),
                    ),
                ]
                .into(),
            };
            Some((
                Ok(Delivery {
                    message,
                    acker: Box::new(NoAck),
                }),
                schedule,
            ))
        })
        .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_take_dapr_forms() {
        assert!(matches!(Schedule::parse("@every 2s"), Ok(Schedule::Every(d)) if d == Duration::from_secs(2)));
        for ok in [
            "*/5 * * * * *",
            "0 * * * *",
            "@hourly",
            "@daily",
            "@midnight",
            "@annually",
            "TZ=UTC 0 0 * * *",
        ] {
            assert!(Schedule::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "* * *",
            "@every nope",
            "@every 0s",
            "TZ=Europe/Paris 0 0 * * *",
            "61 * * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
        let wait = Schedule::parse("* * * * * *")
            .expect("every second")
            .wait()
            .expect("a next time");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
    }
}
