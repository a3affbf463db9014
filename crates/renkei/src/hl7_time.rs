//! Where HL7 v2 times written without a UTC offset happened, one rule for `serve --mllp` and
//! `import --ssmix2`: the host's time zone (`TZ`, else `/etc/localtime`, read through
//! chrono's `Local`) with the offset in force at each time, daylight saving time included,
//! unless `--hl7-utc-offset` fixes one. The choice is announced in one log line at start-up;
//! a `TZ` that names no zone this host knows is refused rather than silently read as UTC
//! (which is what chrono would do).

use std::path::Path;

use anyhow::bail;
use chrono::{Datelike, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone as _};
use hl7v2::fhir::zone::offset_text;
use hl7v2::fhir::{MappingOptions, TimeZone, ZoneRules};

/// Where chrono looks for a `TZ` name (its `find_tz_file`).
const ZONEINFO: [&str; 3] = ["/usr/share/zoneinfo", "/share/zoneinfo", "/etc/zoneinfo"];

/// The `--hl7-utc-offset` flag of `serve` and `import`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Hl7TimeArgs {
    /// UTC offset of HL7 v2 times written without one (e.g. +09:00 for JAHIS/SS-MIX2 feeds
    /// on a host in another zone). Default: the host's time zone (TZ), with its daylight
    /// saving time.
    #[arg(
        long = "hl7-utc-offset",
        alias = "utc-offset",
        value_name = "OFFSET",
        allow_hyphen_values = true
    )]
    pub hl7_utc_offset: Option<String>,
}

impl Hl7TimeArgs {
    /// The mapping options these flags and the host give, announced in one log line.
    pub fn mapping(&self) -> anyhow::Result<MappingOptions> {
        let zone = match &self.hl7_utc_offset {
            Some(offset) => {
                let zone = TimeZone::utc_offset(offset)?;
                tracing::info!(
                    "HL7 v2 times without an offset are read at {} (--hl7-utc-offset)",
                    zone.name()
                );
                zone
            }
            None => {
                let host = HostZone::new()?;
                tracing::info!(
                    "HL7 v2 times without an offset are read in {} ({}); --hl7-utc-offset \
                     overrides",
                    host.name,
                    host.offsets_this_year()
                );
                TimeZone::Rules(std::sync::Arc::new(host))
            }
        };
        Ok(MappingOptions {
            time_zone: Some(zone),
        })
    }
}

/// The host's time zone: chrono's `Local`, under the name `TZ` or `/etc/localtime` gives.
#[derive(Debug)]
struct HostZone {
    name: String,
}

impl HostZone {
    fn new() -> anyhow::Result<HostZone> {
        let name = match std::env::var("TZ") {
            // chrono reads an empty TZ as UTC, as C libraries do.
            Ok(tz) if tz.is_empty() => "UTC".to_owned(),
            Ok(tz) => {
                if !tz_is_known(&tz) {
                    bail!(
                        "TZ={tz:?} names no time zone this host knows (no such file under {} \
                         and not a POSIX TZ rule): HL7 v2 times without an offset would be \
                         read as UTC; set TZ to a zone such as Asia/Tokyo, or pass \
                         --hl7-utc-offset",
                        ZONEINFO[0]
                    );
                }
                tz.trim_start_matches(':').to_owned()
            }
            Err(_) => system_zone_name(),
        };
        Ok(HostZone { name })
    }

    /// `UTC+09:00`, or `UTC-05:00 now; UTC-04:00 at other times of the year`.
    fn offsets_this_year(&self) -> String {
        let now = chrono::Local::now();
        let current = now.offset().fix();
        let noon = |month| {
            NaiveDate::from_ymd_opt(now.year(), month, 1).and_then(|d| d.and_hms_opt(12, 0, 0))
        };
        let other = [1, 7]
            .into_iter()
            .filter_map(noon)
            .filter_map(|t| self.offsets(t).earliest())
            .find(|o| *o != current);
        match other {
            None => format!("UTC{}", offset_text(current)),
            Some(o) => format!(
                "UTC{} now; UTC{} at other times of the year",
                offset_text(current),
                offset_text(o)
            ),
        }
    }
}

impl ZoneRules for HostZone {
    fn name(&self) -> &str {
        &self.name
    }

    fn offsets(&self, local: NaiveDateTime) -> LocalResult<FixedOffset> {
        chrono::Local.offset_from_local_datetime(&local)
    }
}

/// Whether chrono can read `TZ` as a zone: a file (absolute, or under a zoneinfo
/// directory), `localtime`, or a POSIX rule (`EST5EDT,M3.2.0,M11.1.0`, `JST-9`: a rule
/// always has an hour offset in it, a zone name never does).
fn tz_is_known(tz: &str) -> bool {
    let name = tz.strip_prefix(':').unwrap_or(tz);
    if name == "localtime" {
        return true;
    }
    let file = |p: &Path| p.is_file();
    if Path::new(name).is_absolute() {
        return file(Path::new(name));
    }
    if ZONEINFO.iter().any(|dir| file(&Path::new(dir).join(name))) {
        return true;
    }
    !tz.starts_with(':') && name.bytes().any(|b| b.is_ascii_digit())
}

/// The host zone's IANA name from `/etc/localtime` (a link into the zoneinfo tree) or
/// `/etc/timezone`.
fn system_zone_name() -> String {
    if let Ok(target) = std::fs::read_link("/etc/localtime")
        && let Some((_, name)) = target.to_string_lossy().split_once("zoneinfo/")
    {
        return name.to_owned();
    }
    std::fs::read_to_string("/etc/timezone")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "the host's local time".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tz_values_chrono_would_read() {
        assert!(tz_is_known("EST5EDT,M3.2.0,M11.1.0"));
        assert!(tz_is_known("JST-9"));
        assert!(tz_is_known("localtime"));
        assert!(!tz_is_known("Mars/Olympus_Mons"));
        assert!(!tz_is_known(":/nonexistent/zone"));
        if Path::new("/usr/share/zoneinfo/Asia/Tokyo").is_file() {
            assert!(tz_is_known("Asia/Tokyo"));
            assert!(tz_is_known(":Asia/Tokyo"));
        }
    }

    #[test]
    fn a_fixed_offset_is_checked() {
        let args = |o: &str| Hl7TimeArgs {
            hl7_utc_offset: Some(o.to_owned()),
        };
        let mapping = args("+09:00").mapping().unwrap();
        assert_eq!(mapping.time_zone.unwrap().name(), "UTC+09:00");
        assert!(args("JST").mapping().is_err());
    }
}
