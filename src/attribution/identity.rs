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

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::event::Event;

/// The links between ids found in a set of events. The maps are only looked up, never walked,
/// so they hash (an experiment read-out looks up a million keys); the sets they hold are ordered,
/// so clusters come out sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// userId → the anonymousIds it was seen with.
    devices: HashMap<String, BTreeSet<String>>,
    /// anonymousId → the userIds seen with it.
    users: HashMap<String, BTreeSet<String>>,
    /// id ↔ id from `alias` events, both directions.
    aliases: HashMap<String, BTreeSet<String>>,
    /// Every id some event carried as its `userId`.
    user_ids: HashSet<String>,
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
        self.add_user(user);
        if let Some(anonymous) = &event.anonymous_id {
            self.add_device(user, anonymous);
        }
        if event.kind.as_deref() == Some("alias")
            && let Some(previous) = &event.previous_id
        {
            self.add_alias(previous, user);
        }
    }

    /// Records that some event carried `user` as its `userId`.
    pub fn add_user(&mut self, user: &str) {
        if !self.user_ids.contains(user) {
            self.user_ids.insert(user.to_owned());
        }
    }

    /// Records that `user` was seen on device `anonymous` (one event carried both); `user` is
    /// recorded as a userId.
    pub fn add_device(&mut self, user: &str, anonymous: &str) {
        self.add_user(user);
        self.devices.entry(user.to_owned()).or_default().insert(anonymous.to_owned());
        self.users.entry(anonymous.to_owned()).or_default().insert(user.to_owned());
    }

    /// Records an `alias` event's link between `previous` and `user` (a userId, recorded as one).
    pub fn add_alias(&mut self, previous: &str, user: &str) {
        self.add_user(user);
        if previous != user {
            self.aliases.entry(user.to_owned()).or_default().insert(previous.to_owned());
            self.aliases.entry(previous.to_owned()).or_default().insert(user.to_owned());
        }
    }

    /// True when some link names `id`: otherwise its person has no other id.
    pub fn is_linked(&self, id: &str) -> bool {
        self.user_ids.contains(id) || self.users.contains_key(id) || self.aliases.contains_key(id)
    }

    /// Every id that is the same person as `id`, `id` included, at most `max_ids` of them (and
    /// whether there were more): the cluster of `id` if it is a userId or has an alias, and the
    /// clusters of the users seen on it if it is a device. So an anonymousId reaches its user's
    /// other devices and userIds, and a userId its devices; a device shared by two users reaches
    /// both (it is each one's), while the users stay apart in their own clusters.
    pub fn person_ids(&self, id: &str, max_ids: usize) -> (BTreeSet<String>, bool) {
        let mut ids = BTreeSet::from([id.to_owned()]);
        let mut truncated = false;
        let mut add = |ids: &mut BTreeSet<String>, found: Vec<String>| {
            for found in found {
                if ids.len() >= max_ids.max(1) && !ids.contains(&found) {
                    truncated = true;
                } else {
                    ids.insert(found);
                }
            }
        };
        let starts = std::iter::once(id).chain(self.users.get(id).into_iter().flatten().map(String::as_str));
        for start in starts {
            let cluster = user_cluster(start, self);
            add(&mut ids, cluster.user_ids);
            add(&mut ids, cluster.anonymous_ids);
        }
        (ids, truncated)
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
    fn a_device_reaches_its_users_other_devices_and_aliases_and_a_user_its_devices() {
        let events = [
            identify("alice", "laptop"),
            identify("alice", "phone"),
            alias("alice", "alice@new"),
            identify("bob", "laptop"),
            identify("carol", "tablet"),
        ];
        let links = Links::from_events(&events);
        let ids = |id: &str| links.person_ids(id, 100).0.into_iter().collect::<Vec<_>>();
        // The shared laptop is alice's and bob's: it reaches both, but alice does not reach bob.
        assert_eq!(ids("laptop"), ["alice", "alice@new", "bob", "laptop", "phone"]);
        assert_eq!(ids("alice"), ["alice", "alice@new", "laptop", "phone"]);
        assert_eq!(ids("phone"), ["alice", "alice@new", "laptop", "phone"]);
        assert_eq!(ids("nobody"), ["nobody"]);
        assert!(!links.is_linked("nobody"));
        assert!(["laptop", "alice", "alice@new", "bob", "tablet", "carol"].iter().all(|id| links.is_linked(id)));
        let (cut, truncated) = links.person_ids("laptop", 3);
        assert_eq!((cut.len(), truncated), (3, true));
        assert!(cut.contains("laptop"), "the id asked for is always kept");
    }

    #[test]
    fn links_added_one_by_one_equal_links_read_from_events() {
        let events = [identify("a", "d1"), alias("a", "b"), alias("d2", "b"), alias("b", "b")];
        let mut links = Links::default();
        links.add_device("a", "d1");
        links.add_alias("a", "b");
        links.add_alias("d2", "b");
        links.add_alias("b", "b");
        assert_eq!(links, Links::from_events(&events));
    }

    #[test]
    fn an_unknown_user_has_an_empty_cluster() {
        let links = Links::from_events(&[identify("john", "laptop")]);
        assert_eq!(user_cluster("nobody", &links), UserCluster::default());
        assert_eq!(user_cluster("laptop", &links), UserCluster::default());
    }
}
