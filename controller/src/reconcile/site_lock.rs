//! One controller per site and pair: a controller run with `--site` registers itself in the
//! witness (`<prefix>/<ns>/<name>/controllers/<site>`, on a lease of `TTL`, renewed with every
//! readiness round). A second controller started with the same `--site` finds the first one's
//! registration and says so (a Warning Event and a metric) instead of silently running the same
//! steps twice. It is a report, not a lock: the epoch swap already makes two controllers safe.
//! Only a registration that is renewed is reported (seen twice on different leases): a crashed
//! predecessor's (a restart, a replica taking over) only runs out and is then replaced.

use std::time::Duration;

use crate::{context::Context, events::EventNote};
use crate::{coord::etcd::Witness, crd::DisasterRecoveryPair};

/// Lease of a registration; renewed every readiness round (30 s).
pub const TTL: Duration = Duration::from_secs(45);

/// This process's registration value: `<site>@<instance>#<nonce>`.
pub fn me(ctx: &Context, site: &str) -> String {
    format!("{site}@{}#{}", ctx.instance, ctx.nonce)
}

/// Registers this controller for `drp` on the round's witness connection `w`; an Event when
/// another controller holds the site.
pub async fn check(drp: &DisasterRecoveryPair, ctx: &Context, w: &mut Witness) -> Option<EventNote> {
    let site = ctx.site.as_deref()?;
    let pair = crate::metrics::PairLabels {
        pair: format!(
            "{}/{}",
            drp.metadata.namespace.clone().unwrap_or_default(),
            drp.metadata.name.clone().unwrap_or_default()
        ),
    };
    let registered = w.register_site(site, &me(ctx, site), TTL).await;
    let renewed = ctx.memory.with(&pair.pair, |m| match &registered {
        Ok(Some((_, lease))) => {
            m.other_site_controller.replace(*lease).is_some_and(|before| before != *lease)
        }
        _ => {
            m.other_site_controller = None;
            false
        }
    });
    let gauge = ctx.metrics.duplicate_site.get_or_create(&pair);
    match registered {
        Ok(Some(_)) if !renewed => None, // seen once: maybe a crashed predecessor's
        Ok(Some((other, _))) => {
            gauge.set(1);
            Some(EventNote {
                warning: true,
                reason: "DuplicateSiteController".into(),
                note: format!(
                    "another controller runs with --site {site} for this pair ({other}, registered in the \
                     witness); this one ({}) also acts, so both may run the same steps: stop one of them. \
                     (A replica that has just taken over from a crashed leader sees this until the old \
                     registration expires, within {TTL:?}.)",
                    me(ctx, site)
                ),
            })
        }
        Ok(None) => {
            gauge.set(0);
            None
        }
        Err(_) => None, // the witness's availability is reported by the readiness checks
    }
}
