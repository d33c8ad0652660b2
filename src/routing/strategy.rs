//! Routing strategies: the order in which the deployments of each `order` tier of a route plan
//! are tried, from what the router has seen of them (LiteLLM's `routing_strategy`): requests in
//! flight (`least-busy`), recent latency (`latency-based-routing`), this minute's usage
//! (`usage-based-routing`, `-v2`) or price (`cost-based-routing`); `simple-shuffle` keeps the
//! plan's weighted shuffle. The forwarder arranges a group's plan before its first attempt
//! (Pingora's `request_filter`) and reports each attempt back. Pingora-free.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use filters::route::Deployment;

use super::{Health, Samples};
use crate::config::{LatencyArgs, RoutingStrategy};

/// LiteLLM's latency penalty for a timed-out attempt (seconds).
const TIMEOUT_PENALTY: f64 = 1000.0;
/// LiteLLM's price for a deployment whose cost per token is unknown (input and output each).
const UNKNOWN_PRICE: f64 = 5.0;

/// A minute of the clock, for the usage counters.
fn minute(now: i64) -> i64 {
    now.div_euclid(60_000)
}

impl Health {
    /// Orders `candidates` (already in `order` tiers, shuffled by weight within each) by the
    /// strategy, within each tier. `price` is a deployment's cost per input plus per output
    /// token (`None`: unknown). `usage-based` leaves out deployments over their `rpm`/`tpm`
    /// this minute; `false` when that left none.
    pub fn arrange(
        &self,
        strategy: &RoutingStrategy,
        candidates: &mut Vec<Arc<Deployment>>,
        price: impl Fn(usize) -> Option<f64>,
        stream: bool,
        now: i64,
    ) -> bool {
        let tier = |d: &Deployment| d.order.unwrap_or(u32::MAX);
        let mut keys: Vec<f64> = match strategy {
            RoutingStrategy::SimpleShuffle => return true,
            RoutingStrategy::LeastBusy => candidates
                .iter()
                .map(|d| {
                    self.state(d.index).map_or(0, |s| {
                        s.in_flight.load(Ordering::Relaxed) + s.peers.lock().in_flight
                    }) as f64
                })
                .collect(),
            RoutingStrategy::CostBased => candidates
                .iter()
                .map(|d| price(d.index).unwrap_or(2.0 * UNKNOWN_PRICE))
                .collect(),
            RoutingStrategy::UsageBased => {
                let this_minute = minute(now);
                candidates.retain(|d| {
                    let (rpm, tpm) = self.usage(d.index, this_minute);
                    d.rpm.is_none_or(|limit| rpm < limit) && d.tpm.is_none_or(|limit| tpm < limit)
                });
                if candidates.is_empty() {
                    return false;
                }
                candidates
                    .iter()
                    .map(|d| self.usage(d.index, this_minute).1 as f64)
                    .collect()
            }
            RoutingStrategy::LatencyBased(args) => {
                let mut keys: Vec<f64> = candidates
                    .iter()
                    .map(|d| self.latency(d.index, stream, now, args))
                    .collect();
                // Within a tier, everything within `lowest * (1 + buffer)` counts as the
                // lowest, so the shuffle picks among them.
                if args.lowest_latency_buffer > 0.0 {
                    for t in candidates.iter().map(|d| tier(d)).collect::<Vec<_>>() {
                        let lowest = candidates
                            .iter()
                            .zip(&keys)
                            .filter(|(d, _)| tier(d) == t)
                            .map(|(_, k)| *k)
                            .fold(f64::INFINITY, f64::min);
                        let limit = lowest * (1.0 + args.lowest_latency_buffer);
                        for (d, k) in candidates.iter().zip(keys.iter_mut()) {
                            if tier(d) == t && *k <= limit {
                                *k = lowest;
                            }
                        }
                    }
                }
                keys
            }
        };
        // A stable sort by (tier, key): ties keep the shuffled order.
        let mut ranked: Vec<(Arc<Deployment>, f64)> =
            candidates.drain(..).zip(keys.drain(..)).collect();
        ranked.sort_by(|(a, ka), (b, kb)| {
            tier(a)
                .cmp(&tier(b))
                .then(ka.partial_cmp(kb).unwrap_or(std::cmp::Ordering::Equal))
        });
        candidates.extend(ranked.into_iter().map(|(d, _)| d));
        true
    }

    /// An attempt on the deployment starts: one more in flight, one more request this minute.
    pub fn attempt_started(&self, index: usize, now: i64) {
        if let Some(s) = self.state(index) {
            s.in_flight.fetch_add(1, Ordering::Relaxed);
            let mut u = s.usage.lock();
            if u.0 != minute(now) {
                *u = (minute(now), 0, 0);
            }
            u.1 += 1;
        }
    }

    /// The attempt is over (answered, failed, or the client left).
    pub fn attempt_ended(&self, index: usize) {
        if let Some(s) = self.state(index) {
            // Never below zero, whatever the order of calls.
            let _ = s
                .in_flight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// A delivered answer: its tokens count toward the minute's usage and, for
    /// `latency-based-routing`, its latency is a sample (seconds per output token when the
    /// usage says, else the whole time; a stream's time to its first token as well).
    pub fn record_answer(
        &self,
        index: usize,
        strategy: &RoutingStrategy,
        seconds: f64,
        ttft: Option<f64>,
        tokens: (u64, u64),
        now: i64,
    ) {
        let Some(s) = self.state(index) else {
            return;
        };
        let (prompt, completion) = tokens;
        match strategy {
            RoutingStrategy::UsageBased => {
                let mut u = s.usage.lock();
                if u.0 == minute(now) {
                    u.2 += prompt + completion;
                }
            }
            RoutingStrategy::LatencyBased(args) => {
                let sample = if completion > 0 {
                    seconds / completion as f64
                } else {
                    seconds
                };
                let mut l = s.latency.lock();
                push(&mut l.latency, (now, sample), args);
                if let Some(t) = ttft {
                    push(&mut l.ttft, (now, t), args);
                }
            }
            _ => {}
        }
    }

    /// A timed-out attempt: LiteLLM's 1000 s latency sample, so the deployment goes last.
    pub fn record_timeout(&self, index: usize, strategy: &RoutingStrategy, now: i64) {
        if let (RoutingStrategy::LatencyBased(args), Some(s)) = (strategy, self.state(index)) {
            push(&mut s.latency.lock().latency, (now, TIMEOUT_PENALTY), args);
        }
    }

    /// Requests and tokens of the deployment this minute.
    fn usage(&self, index: usize, this_minute: i64) -> (u64, u64) {
        self.state(index).map_or((0, 0), |s| {
            let u = *s.usage.lock();
            let own = if u.0 == this_minute {
                (u.1, u.2)
            } else {
                (0, 0)
            };
            let p = s.peers.lock().usage;
            if p.0 == this_minute {
                (own.0 + p.1, own.1 + p.2)
            } else {
                own
            }
        })
    }

    /// The deployment's average latency over its samples younger than `ttl` (a stream's time
    /// to first token when there are such samples); 0 without samples, so an unseen
    /// deployment is tried first, as in LiteLLM.
    fn latency(&self, index: usize, stream: bool, now: i64, args: &LatencyArgs) -> f64 {
        let Some(s) = self.state(index) else {
            return 0.0;
        };
        let l = s.latency.lock();
        let peers = s.peers.lock();
        // This instance's samples and the others' (`shared`): (sum, count) of the fresh ones,
        // without allocating (this runs for every candidate of every request).
        let ttl = args.ttl.as_millis() as i64;
        let fresh = |own: &Samples, theirs: &[(i64, f64)]| -> (f64, u32) {
            own.iter()
                .chain(theirs)
                .filter(|(at, v)| now - at < ttl && v.is_finite() && *v >= 0.0)
                .fold((0.0, 0), |(sum, n), (_, v)| (sum + v, n + 1))
        };
        let ttft = if stream {
            fresh(&l.ttft, &peers.ttft)
        } else {
            (0.0, 0)
        };
        let (sum, n) = if ttft.1 == 0 {
            fresh(&l.latency, &peers.latency)
        } else {
            ttft
        };
        if n == 0 { 0.0 } else { sum / f64::from(n) }
    }
}

/// Keeps the last `max_latency_list_size` samples.
fn push(samples: &mut Samples, sample: (i64, f64), args: &LatencyArgs) {
    samples.push_back(sample);
    while samples.len() > args.max_latency_list_size {
        samples.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouterSettings;

    fn deployments(n: usize) -> Vec<Arc<Deployment>> {
        (0..n)
            .map(|i| {
                Arc::new(Deployment {
                    id: format!("d{i}"),
                    index: i,
                    model_name: "g".into(),
                    provider: "openai".into(),
                    upstream_model: "m".into(),
                    api_base: "http://h/v1".into(),
                    public_api_base: "http://h/v1".into(),
                    api_key: None,
                    weight: None,
                    rpm: None,
                    tpm: None,
                    order: None,
                    timeout: std::time::Duration::from_secs(1),
                    stream_timeout: None,
                    extra_headers: Vec::new(),
                })
            })
            .collect()
    }

    fn ids(c: &[Arc<Deployment>]) -> Vec<&str> {
        c.iter().map(|d| d.id.as_str()).collect()
    }

    #[test]
    fn least_busy_prefers_fewer_requests_in_flight() {
        let h = Health::new(3, RouterSettings::default());
        h.attempt_started(0, 0);
        h.attempt_started(0, 0);
        h.attempt_started(1, 0);
        let mut c = deployments(3);
        assert!(h.arrange(&RoutingStrategy::LeastBusy, &mut c, |_| None, false, 0));
        assert_eq!(ids(&c), ["d2", "d1", "d0"]);
        h.attempt_ended(0);
        h.attempt_ended(0);
        h.attempt_ended(0);
        let mut c = deployments(3);
        h.arrange(&RoutingStrategy::LeastBusy, &mut c, |_| None, false, 0);
        assert_eq!(
            ids(&c),
            ["d0", "d2", "d1"],
            "never below zero; ties keep the order"
        );
    }

    #[test]
    fn latency_based_prefers_the_fastest_and_forgets_after_ttl() {
        let args = LatencyArgs {
            ttl: std::time::Duration::from_secs(60),
            ..LatencyArgs::default()
        };
        let s = RoutingStrategy::LatencyBased(args);
        let h = Health::new(2, RouterSettings::default());
        h.record_answer(0, &s, 2.0, None, (0, 0), 0);
        h.record_answer(1, &s, 1.0, None, (0, 10), 0);
        let mut c = deployments(2);
        h.arrange(&s, &mut c, |_| None, false, 1_000);
        assert_eq!(ids(&c), ["d1", "d0"], "0.1 s per token beats 2 s");
        h.record_timeout(1, &s, 2_000);
        let mut c = deployments(2);
        h.arrange(&s, &mut c, |_| None, false, 3_000);
        assert_eq!(ids(&c), ["d0", "d1"], "a timeout is a 1000 s sample");
        // After the ttl every sample is gone: both unseen, the plan's order.
        let mut c = deployments(2);
        h.arrange(&s, &mut c, |_| None, false, 70_000);
        assert_eq!(ids(&c), ["d0", "d1"]);
    }

    #[test]
    fn usage_based_skips_deployments_over_their_rpm() {
        let h = Health::new(2, RouterSettings::default());
        let mut c = deployments(2);
        Arc::make_mut(&mut c[0]).rpm = Some(2);
        let limited = c.clone();
        h.attempt_started(0, 0);
        h.attempt_started(0, 0);
        let mut c = limited.clone();
        assert!(h.arrange(&RoutingStrategy::UsageBased, &mut c, |_| None, false, 1_000));
        assert_eq!(ids(&c), ["d1"]);
        // The next minute it is back.
        let mut c = limited.clone();
        h.arrange(
            &RoutingStrategy::UsageBased,
            &mut c,
            |_| None,
            false,
            61_000,
        );
        assert_eq!(c.len(), 2);
        let mut only = vec![limited[0].clone()];
        assert!(!h.arrange(
            &RoutingStrategy::UsageBased,
            &mut only,
            |_| None,
            false,
            1_000
        ));
    }

    #[test]
    fn cost_based_prefers_the_cheapest_and_unknown_prices_last() {
        let h = Health::new(3, RouterSettings::default());
        let mut c = deployments(3);
        let prices = [Some(3.0), None, Some(0.5)];
        h.arrange(&RoutingStrategy::CostBased, &mut c, |i| prices[i], false, 0);
        assert_eq!(ids(&c), ["d2", "d0", "d1"]);
    }
}
