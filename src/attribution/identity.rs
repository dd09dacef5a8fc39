/*!
Identity stitching: which devices (anonymousIds) belong to a user, and which userIds are one
person — from explicit links only, never by guesswork.

Two kinds of link are read from events:
- **device links**: any event that carries both a `userId` and an `anonymousId` (`identify`
  first of all, but also every `track`/`page` sent after it) says that user used that device;
- **alias links**: an `alias` event says `previousId` and `userId` are the same person.
  `previousId` is either an earlier userId (a renamed account) or an anonymousId (analytics.js
  aliases the current anonymousId when no user is identified yet).

A user's cluster is the set of userIds reachable from it through alias links, and every
anonymousId linked to one of them. Alias links are followed *only through userIds* (ids that some
event carried as its `userId`): an id that was only ever an `anonymousId` or a `previousId` is a
device, a leaf. So two people who log in on one shared laptop are **not** merged: each lists that
laptop's anonymousId, and neither lists the other. An id that was seen as neither a `userId` nor
an `anonymousId`, only as a `previousId`, is taken to be an anonymousId.

The store-backed caller cannot load every event: `query::attribution::cluster` runs the same
search in SQL (one recursive query over the alias links, one for the devices), and its tests
check that it finds what [`user_cluster`] finds over all the events.
*/

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::event::Event;

/// The links between ids found in a set of events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// userId → the anonymousIds it was seen with.
    devices: BTreeMap<String, BTreeSet<String>>,
    /// anonymousId → the userIds seen with it.
    users: BTreeMap<String, BTreeSet<String>>,
    /// id ↔ id from `alias` events, both directions.
    aliases: BTreeMap<String, BTreeSet<String>>,
    /// Every id some event carried as its `userId`.
    user_ids: BTreeSet<String>,
}

/// A user's cluster: the userIds that are this person and the devices they used (both sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserCluster {
    /// The user asked for and every userId aliased to it, transitively.
    pub user_ids: Vec<String>,
    /// Every anonymousId linked to one of those userIds.
    pub anonymous_ids: Vec<String>,
}

impl Links {
    /// The links in these events (any order; repeated events change nothing).
    pub fn from_events(events: &[Event]) -> Self {
        let mut links = Links::default();
        for event in events {
            links.add(event);
        }
        links
    }

    /// Adds the links one event carries.
    pub fn add(&mut self, event: &Event) {
        let Some(user) = &event.user_id else { return };
        self.user_ids.insert(user.to_owned());
        if let Some(anonymous) = &event.anonymous_id {
            self.devices.entry(user.to_owned()).or_default().insert(anonymous.to_owned());
            self.users.entry(anonymous.to_owned()).or_default().insert(user.to_owned());
        }
        if event.kind.as_deref() == Some("alias")
            && let Some(previous) = &event.previous_id
            && previous != user
        {
            self.aliases.entry(user.to_owned()).or_default().insert(previous.to_owned());
            self.aliases.entry(previous.to_owned()).or_default().insert(user.to_owned());
        }
    }

    /// The userIds reachable from `start` through alias links (followed only through userIds),
    /// and the alias neighbours that are not userIds (devices).
    fn reach(&self, start: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut users = BTreeSet::new();
        let mut leaves = BTreeSet::new();
        if !self.user_ids.contains(start) && !self.aliases.contains_key(start) {
            return (users, leaves);
        }
        users.insert(start.to_owned());
        let mut queue = VecDeque::from([start.to_owned()]);
        while let Some(id) = queue.pop_front() {
            for next in self.aliases.get(&id).into_iter().flatten() {
                if self.user_ids.contains(next) {
                    if users.insert(next.clone()) {
                        queue.push_back(next.clone());
                    }
                } else {
                    leaves.insert(next.clone());
                }
            }
        }
        (users, leaves)
    }
}

/// The cluster of `user_id` in `links`: empty when the id is unknown.
pub fn user_cluster(user_id: &str, links: &Links) -> UserCluster {
    let (users, leaves) = links.reach(user_id);
    let mut anonymous: BTreeSet<String> = leaves;
    for user in &users {
        anonymous.extend(links.devices.get(user).into_iter().flatten().cloned());
    }
    UserCluster { user_ids: users.into_iter().collect(), anonymous_ids: anonymous.into_iter().collect() }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn identify(user: &str, anonymous: &str) -> Event {
        Event::from_value(
            &json!({"type": "identify", "userId": user, "anonymousId": anonymous, "messageId": format!("{user}-{anonymous}")}),
        )
    }

    fn alias(previous: &str, user: &str) -> Event {
        Event::from_value(
            &json!({"type": "alias", "previousId": previous, "userId": user, "messageId": format!("{previous}->{user}")}),
        )
    }

    fn cluster(users: &[&str], anonymous: &[&str]) -> UserCluster {
        UserCluster {
            user_ids: users.iter().map(|s| s.to_string()).collect(),
            anonymous_ids: anonymous.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_user_owns_every_device_it_identified_on() {
        let events = [
            identify("john", "laptop"),
            identify("john", "phone"),
            Event::from_value(
                &json!({"type": "track", "userId": "john", "anonymousId": "tablet", "event": "Signed In"}),
            ),
            Event::from_value(&json!({"type": "track", "userId": "john", "event": "Server Side"})),
        ];
        assert_eq!(
            user_cluster("john", &Links::from_events(&events)),
            cluster(&["john"], &["laptop", "phone", "tablet"])
        );
    }

    #[test]
    fn alias_chains_are_followed_transitively_in_both_directions() {
        let events = [
            identify("old@x", "a1"),
            alias("old@x", "mid@x"),
            identify("mid@x", "a2"),
            alias("mid@x", "new@x"),
            identify("new@x", "a3"),
            alias("anon-before-signup", "new@x"),
        ];
        let links = Links::from_events(&events);
        let expected = cluster(&["mid@x", "new@x", "old@x"], &["a1", "a2", "a3", "anon-before-signup"]);
        assert_eq!(user_cluster("new@x", &links), expected);
        assert_eq!(user_cluster("old@x", &links), expected);
    }

    #[test]
    fn a_shared_device_does_not_merge_its_users() {
        let events = [identify("alice", "family-pc"), identify("bob", "family-pc"), identify("bob", "bob-phone")];
        let links = Links::from_events(&events);
        assert_eq!(user_cluster("alice", &links), cluster(&["alice"], &["family-pc"]));
        assert_eq!(user_cluster("bob", &links), cluster(&["bob"], &["bob-phone", "family-pc"]));
    }

    #[test]
    fn an_anonymous_id_aliased_to_two_users_does_not_merge_them() {
        let events = [alias("kiosk", "alice"), alias("kiosk", "bob"), identify("alice", "a"), identify("bob", "b")];
        let links = Links::from_events(&events);
        assert_eq!(user_cluster("alice", &links), cluster(&["alice"], &["a", "kiosk"]));
        assert_eq!(user_cluster("bob", &links), cluster(&["bob"], &["b", "kiosk"]));
    }

    #[test]
    fn an_unknown_user_has_an_empty_cluster() {
        let links = Links::from_events(&[identify("john", "laptop")]);
        assert_eq!(user_cluster("nobody", &links), UserCluster::default());
        assert_eq!(user_cluster("laptop", &links), UserCluster::default());
    }
}
