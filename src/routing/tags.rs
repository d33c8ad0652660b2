//! Tag routing (LiteLLM's `enable_tag_filtering`): which deployments of a model group a request
//! may go to, from its tags (the body's `tags` and `metadata.tags`, `x-litellm-tags`, its key's
//! and team's tags) and the deployments' `tags` / `tag_regex`. The forwarder applies it to a
//! group's route plan before the routing strategy orders it (Pingora's `request_filter`).
//! Pingora-free.
//!
//! Rules (LiteLLM 1.109.1, `router_strategy/tag_based_routing.py`):
//! * `!tag` leaves out deployments that carry `tag`; `&tag` keeps only those that carry it;
//! * plain tags pick deployments that carry any of them (all of them with
//!   `tag_filtering_match_any: false`); a deployment's `tag_regex` matches `User-Agent: ...`;
//! * an untagged request goes to the deployments tagged `default` if there are any, else to all;
//! * a tagged request that matches nothing goes to the `default` deployments (unless one of its
//!   tags is a tag of this group, which says the caller meant it), else is refused (401), or,
//!   with `model_info.allow_fail_open`, goes to the default pool.

use crate::config::DeploymentTags;

/// What a request brings to tag routing.
#[derive(Debug, Default, Clone)]
pub struct RequestTags {
    /// Every tag that routes, deduplicated, in the order they came.
    pub tags: Vec<String>,
    /// The request's `User-Agent`, for `tag_regex`.
    pub user_agent: Option<String>,
}

/// No deployment of the group may take a request with these tags.
#[derive(Debug, PartialEq, Eq)]
pub struct NotAllowed;

/// The positions in `deployments` (a group's, in plan order) that may serve a request with
/// `request`'s tags. `match_any`: `tag_filtering_match_any`.
pub fn select(
    deployments: &[&DeploymentTags],
    request: &RequestTags,
    match_any: bool,
) -> Result<Vec<usize>, NotAllowed> {
    let all: Vec<usize> = (0..deployments.len()).collect();
    let has = |i: usize, tag: &str| deployments[i].tags.iter().any(|t| t == tag);
    let defaults = |pool: &[usize]| -> Vec<usize> {
        let tagged: Vec<usize> = pool
            .iter()
            .copied()
            .filter(|&i| has(i, "default"))
            .collect();
        if tagged.is_empty() {
            pool.to_vec()
        } else {
            tagged
        }
    };
    let fail_open = || {
        if deployments.iter().any(|d| d.allow_fail_open) {
            Ok(defaults(&all))
        } else {
            Err(NotAllowed)
        }
    };
    let mut required = Vec::new();
    let mut excluded = Vec::new();
    let mut positive = Vec::new();
    for tag in &request.tags {
        if let Some(t) = tag.strip_prefix('&').filter(|t| !t.is_empty()) {
            required.push(t);
        } else if let Some(t) = tag.strip_prefix('!').filter(|t| !t.is_empty()) {
            excluded.push(t);
        } else if !tag.starts_with(['&', '!']) {
            positive.push(tag.as_str());
        }
    }
    let user_agent = request
        .user_agent
        .as_deref()
        .map(|ua| format!("User-Agent: {ua}"));
    let allowed: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| !excluded.iter().any(|t| has(i, t)))
        .collect();
    let candidates: Vec<usize> = allowed
        .iter()
        .copied()
        .filter(|&i| required.iter().all(|t| has(i, t)))
        .collect();
    let regex_deployments = candidates.iter().any(|&i| !deployments[i].regex.is_empty());
    let positive_filter =
        !positive.is_empty() || (user_agent.is_some() && regex_deployments && required.is_empty());
    if !positive_filter {
        if required.is_empty() && excluded.is_empty() {
            // Untagged.
            return Ok(defaults(&all));
        }
        let pool = if required.is_empty() {
            defaults(&all)
                .into_iter()
                .filter(|&i| !excluded.iter().any(|t| has(i, t)))
                .collect()
        } else {
            candidates
        };
        return if pool.is_empty() {
            fail_open()
        } else {
            Ok(pool)
        };
    }
    let matches = |i: usize| {
        let d = deployments[i];
        let by_tag = !d.tags.is_empty()
            && !positive.is_empty()
            && if match_any {
                positive.iter().any(|t| has(i, t))
            } else {
                positive.iter().all(|t| has(i, t))
            };
        if by_tag {
            return true;
        }
        // With all-match, a deployment's regex cannot get round its plain tags.
        let strict = !match_any && !d.tags.is_empty();
        !strict
            && user_agent
                .as_deref()
                .is_some_and(|ua| d.regex.iter().any(|r| r.is_match(ua)))
    };
    let matched: Vec<usize> = candidates.iter().copied().filter(|&i| matches(i)).collect();
    if !matched.is_empty() {
        return Ok(matched);
    }
    let default_tagged: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| has(i, "default"))
        .collect();
    let known_to_group = positive.iter().any(|t| all.iter().any(|&i| has(i, t)));
    if default_tagged.is_empty() || known_to_group {
        return fail_open();
    }
    Ok(default_tagged)
}

/// LiteLLM's message for a refused request (its list printed as Python prints one).
pub fn not_allowed_message(model: &str, tags: &[String]) -> String {
    let list: Vec<String> = tags
        .iter()
        .map(|t| {
            if t.contains('\'') && !t.contains('"') {
                format!("\"{t}\"")
            } else {
                format!("'{}'", t.replace('\\', "\\\\").replace('\'', "\\'"))
            }
        })
        .collect();
    format!(
        "Not allowed to access model due to tags configuration. Passed model={model} and tags=[{}]",
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(tags: &[&str]) -> DeploymentTags {
        DeploymentTags {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    fn req(tags: &[&str]) -> RequestTags {
        RequestTags {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            user_agent: None,
        }
    }

    fn pick(deps: &[DeploymentTags], r: &RequestTags, any: bool) -> Result<Vec<usize>, NotAllowed> {
        select(&deps.iter().collect::<Vec<_>>(), r, any)
    }

    #[test]
    fn plain_tags_pick_the_deployments_that_carry_them() {
        let deps = [dep(&["free"]), dep(&["paid"]), dep(&["paid", "eu"])];
        assert_eq!(pick(&deps, &req(&["paid"]), true), Ok(vec![1, 2]));
        assert_eq!(pick(&deps, &req(&["paid", "eu"]), false), Ok(vec![2]));
        assert_eq!(pick(&deps, &req(&["free", "eu"]), true), Ok(vec![0, 2]));
    }

    #[test]
    fn untagged_requests_use_the_default_deployments_else_all() {
        let with_default = [dep(&["default"]), dep(&["paid"])];
        assert_eq!(pick(&with_default, &req(&[]), true), Ok(vec![0]));
        let without = [dep(&["free"]), dep(&[])];
        assert_eq!(pick(&without, &req(&[]), true), Ok(vec![0, 1]));
    }

    #[test]
    fn unmatched_tags_fall_to_default_unless_the_tag_belongs_to_the_group() {
        let deps = [dep(&["default"]), dep(&["paid"])];
        // "other" is nobody's tag: the default deployment.
        assert_eq!(pick(&deps, &req(&["other"]), true), Ok(vec![0]));
        let no_default = [dep(&["free"]), dep(&["paid"])];
        assert_eq!(pick(&no_default, &req(&["other"]), true), Err(NotAllowed));
        // All-match for a tag pair nobody has, but "paid" is the group's: refused.
        assert_eq!(pick(&deps, &req(&["paid", "eu"]), false), Err(NotAllowed));
    }

    #[test]
    fn exclusions_and_requirements() {
        let deps = [
            dep(&["default"]),
            dep(&["paid", "eu"]),
            dep(&["paid", "us"]),
        ];
        assert_eq!(pick(&deps, &req(&["!eu"]), true), Ok(vec![0]));
        assert_eq!(pick(&deps, &req(&["&eu"]), true), Ok(vec![1]));
        assert_eq!(pick(&deps, &req(&["paid", "!us"]), true), Ok(vec![1]));
        assert_eq!(pick(&deps, &req(&["&asia"]), true), Err(NotAllowed));
    }

    #[test]
    fn fail_open_goes_to_the_default_pool() {
        let mut deps = [dep(&["free"]), dep(&["paid"])];
        deps[0].allow_fail_open = true;
        assert_eq!(pick(&deps, &req(&["other"]), true), Ok(vec![0, 1]));
    }

    #[test]
    fn tag_regex_matches_the_user_agent() {
        let mut deps = [dep(&[]), dep(&["default"])];
        deps[0].regex = vec![regex::Regex::new("^User-Agent: claude-code/").unwrap()];
        let mut r = req(&[]);
        r.user_agent = Some("claude-code/1.0.3".into());
        assert_eq!(pick(&deps, &r, true), Ok(vec![0]));
        r.user_agent = Some("curl/8".into());
        assert_eq!(pick(&deps, &r, true), Ok(vec![1]));
    }

    #[test]
    fn the_message_lists_tags_as_litellm_prints_them() {
        assert_eq!(
            not_allowed_message("gpt-4", &["a".into(), "b'c".into()]),
            "Not allowed to access model due to tags configuration. Passed model=gpt-4 and tags=['a', \"b'c\"]"
        );
    }
}
