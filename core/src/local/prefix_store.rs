//! Finished requests' KV state, kept in host memory for later requests that share a prefix.
//!
//! Keeping finished sequences in the KV cache itself is not free: llama.cpp attends over (and
//! masks) every used cell of a unified cache on every decode step, so each idle token there
//! slows down every running request (measured in `benches/decode_shapes.rs`: 24,000 idle
//! tokens cost a 0.5B model a fifth of its generation speed and 40% of its prompt speed).
//! The engine therefore snapshots a sequence when its request ends, frees its cells, and
//! restores the snapshot into a new request's sequence when the prompts share a prefix:
//! about a millisecond for 2,000 tokens of a 0.5B model.

/// Snapshots of sequences, each with the tokens it holds, bounded by a total token budget and
/// evicted least recently used first.
pub(crate) struct PrefixStore<Token, State> {
    entries: Vec<Entry<Token, State>>,
    budget_tokens: usize,
    held_tokens: usize,
    clock: u64,
}

struct Entry<Token, State> {
    tokens: Vec<Token>,
    state: State,
    last_used: u64,
}

/// The length of the common prefix of `a` and `b`.
pub(crate) fn common_prefix<Token: PartialEq>(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl<Token: PartialEq, State> PrefixStore<Token, State> {
    pub(crate) fn new(budget_tokens: usize) -> Self {
        PrefixStore { entries: Vec::new(), budget_tokens, held_tokens: 0, clock: 0 }
    }

    /// Whether a snapshot of `tokens` would serve a prompt that the stored ones can't: false
    /// when it would not fit at all, or when an entry already holds all of `tokens` (that
    /// entry then counts as used).
    pub(crate) fn would_add(&mut self, tokens: &[Token]) -> bool {
        if tokens.is_empty() || tokens.len() > self.budget_tokens {
            return false;
        }
        self.clock += 1;
        let clock = self.clock;
        match self.entries.iter_mut().find(|entry| common_prefix(&entry.tokens, tokens) == tokens.len()) {
            Some(covering) => {
                covering.last_used = clock;
                false
            }
            None => true,
        }
    }

    /// Stores a snapshot holding `tokens`. Entries whose tokens are a prefix of these are
    /// dropped (the new one serves every prompt they did); then the least recently used go
    /// until the budget holds.
    pub(crate) fn insert(&mut self, tokens: Vec<Token>, state: State) {
        if !self.would_add(&tokens) {
            return;
        }
        let mut index = 0;
        while index < self.entries.len() {
            if common_prefix(&self.entries[index].tokens, &tokens) == self.entries[index].tokens.len() {
                self.remove(index);
            } else {
                index += 1;
            }
        }
        while self.held_tokens + tokens.len() > self.budget_tokens {
            let Some(oldest) = self.entries.iter().enumerate().min_by_key(|(_, entry)| entry.last_used).map(|(i, _)| i)
            else {
                break;
            };
            self.remove(oldest);
        }
        self.held_tokens += tokens.len();
        self.entries.push(Entry { tokens, state, last_used: self.clock });
    }

    /// The tokens and state of the entry sharing the longest prefix with `prompt`; it counts
    /// as used.
    pub(crate) fn longest_match(&mut self, prompt: &[Token]) -> Option<(&[Token], &State)> {
        let (_, index) = self
            .entries
            .iter()
            .enumerate()
            .map(|(index, entry)| (common_prefix(&entry.tokens, prompt), index))
            .max_by_key(|&(shared, index)| (shared, self.entries[index].last_used))
            .filter(|&(shared, _)| shared > 0)?;
        self.clock += 1;
        let entry = &mut self.entries[index];
        entry.last_used = self.clock;
        Some((&entry.tokens, &entry.state))
    }

    /// Tokens held by all entries together.
    #[cfg(test)]
    fn held_tokens(&self) -> usize {
        self.held_tokens
    }

    fn remove(&mut self, index: usize) {
        let entry = self.entries.swap_remove(index);
        self.held_tokens -= entry.tokens.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_of(budget: usize) -> PrefixStore<u32, &'static str> {
        PrefixStore::new(budget)
    }

    fn matched(store: &mut PrefixStore<u32, &'static str>, prompt: &[u32]) -> Option<(usize, &'static str)> {
        store.longest_match(prompt).map(|(tokens, state)| (common_prefix(tokens, prompt), *state))
    }

    #[test]
    fn the_longest_shared_prefix_wins() {
        let mut store = store_of(100);
        store.insert(vec![1, 2, 3], "short");
        store.insert(vec![1, 2, 3, 9, 9], "other branch");
        store.insert(vec![5, 6], "unrelated");
        assert_eq!(matched(&mut store, &[1, 2, 3, 9, 7]), Some((4, "other branch")));
        assert_eq!(matched(&mut store, &[5, 6, 7]), Some((2, "unrelated")));
        assert_eq!(matched(&mut store, &[8]), None);
    }

    #[test]
    fn least_recently_used_entries_go_first_when_over_budget() {
        let mut store = store_of(10);
        store.insert(vec![1; 4], "a");
        store.insert(vec![2; 4], "b");
        assert_eq!(matched(&mut store, &[1, 1]), Some((2, "a")), "a is now the more recent");
        store.insert(vec![3; 4], "c");
        assert_eq!(matched(&mut store, &[2]), None, "b was the least recently used");
        assert_eq!(matched(&mut store, &[1]), Some((1, "a")));
        assert_eq!(matched(&mut store, &[3]), Some((1, "c")));
        assert_eq!(store.held_tokens(), 8);
    }

    #[test]
    fn an_entry_extended_by_a_later_one_is_replaced_not_duplicated() {
        let mut store = store_of(100);
        store.insert(vec![1, 2, 3], "turn one");
        store.insert(vec![1, 2, 3, 4, 5], "turn two");
        assert_eq!(store.held_tokens(), 5, "turn one is a prefix of turn two");
        assert_eq!(matched(&mut store, &[1, 2, 3, 4, 5, 6]), Some((5, "turn two")));
        store.insert(vec![1, 2, 3], "covered");
        assert_eq!(store.held_tokens(), 5, "tokens an entry already holds are not stored again");
        assert_eq!(matched(&mut store, &[1, 2]), Some((2, "turn two")));
    }

    #[test]
    fn snapshots_larger_than_the_budget_are_not_stored() {
        let mut store = store_of(3);
        store.insert(vec![1, 2], "fits");
        store.insert(vec![7, 7, 7, 7], "too big");
        assert_eq!(matched(&mut store, &[7]), None);
        assert_eq!(matched(&mut store, &[1]), Some((1, "fits")), "a snapshot that can't fit evicts nothing");
        let mut empty = store_of(0);
        empty.insert(vec![1], "no budget");
        assert_eq!(matched(&mut empty, &[1]), None);
    }
}
