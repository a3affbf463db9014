//! The exchange's state beside the resources: the hub's node registrations, the record
//! locator's holdings, the aliases of de-duplicated directory entries, and the sender's queue
//! of directed messages. Each row is JSON the exchange layer wrote, under a key it chose; the
//! store keeps rows and reads them back by key or key prefix, nothing more.

use async_trait::async_trait;

use crate::error::StoreError;
use crate::registry::{Rows, Table};

/// Which of the exchange's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeTable {
    /// The hub's node registrations, by node id.
    Nodes,
    /// The record locator's holdings, by `node|patient|type`.
    Holdings,
    /// A node's resource kept under another id at the hub, by `node|type|id`.
    Aliases,
    /// The sender's queue of directed messages, by message id.
    Dispatch,
}

impl ExchangeTable {
    fn table(self) -> Table {
        match self {
            ExchangeTable::Nodes => Table::ExchangeNode,
            ExchangeTable::Holdings => Table::ExchangeHolding,
            ExchangeTable::Aliases => Table::ExchangeAlias,
            ExchangeTable::Dispatch => Table::ExchangeDispatch,
        }
    }
}

/// The exchange's rows of a store.
#[async_trait]
pub trait ExchangeState: Send + Sync + std::fmt::Debug {
    /// Adds or replaces the row `key`.
    async fn put(&self, table: ExchangeTable, key: &str, body: &str) -> Result<(), StoreError>;
    /// The row `key`.
    async fn get(&self, table: ExchangeTable, key: &str) -> Result<Option<String>, StoreError>;
    /// Every row whose key starts with `prefix` (every row for an empty prefix), in key order.
    async fn scan(
        &self,
        table: ExchangeTable,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Removes the row `key`; whether there was one.
    async fn remove(&self, table: ExchangeTable, key: &str) -> Result<bool, StoreError>;
}

/// The first key after every key that starts with `prefix` (`None`: no bound).
fn after_prefix(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[async_trait]
impl<T: Rows> ExchangeState for T {
    async fn put(&self, table: ExchangeTable, key: &str, body: &str) -> Result<(), StoreError> {
        self.put_row(table.table(), key, body.to_owned()).await
    }

    async fn get(&self, table: ExchangeTable, key: &str) -> Result<Option<String>, StoreError> {
        let rows = self.rows(table.table(), Some(key)).await?;
        Ok(rows.into_iter().next().map(|(_, body)| body))
    }

    async fn scan(
        &self,
        table: ExchangeTable,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        match after_prefix(prefix) {
            Some(to) => self.rows_between(table.table(), prefix, &to).await,
            None => self.rows(table.table(), None).await,
        }
    }

    async fn remove(&self, table: ExchangeTable, key: &str) -> Result<bool, StoreError> {
        self.delete_row(table.table(), key).await
    }
}

#[cfg(test)]
mod tests {
    use super::after_prefix;

    #[test]
    fn a_prefix_is_a_key_range() {
        assert_eq!(after_prefix("a|1|").as_deref(), Some("a|1}"));
        assert_eq!(after_prefix(""), None);
        assert!("a|1|Condition" < "a|1}" && "a|10|x" < "a|1|");
    }
}
