//! Registered clients and users ([`auth::registry`]) in the database: `auth_client` and
//! `auth_user`, each row the JSON of one registration. The store keeps them and nothing
//! more: what a registration must satisfy is checked by `auth` before it gets here, and who
//! may change them is the shell's (`renkei clients`, `renkei users`), never the REST API's.
//!
//! Beside them, `auth_token`: the tokens the authorization server tracks beyond their
//! signature (revoked access tokens until they expire, refresh tokens), opaque JSON to the
//! store, kept so that a restart neither forgets a revocation nor a refresh grant.

use async_trait::async_trait;
use auth::registry::{Client, User};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::postgres::PostgresStore;
use crate::sqlite::{SqliteStore, lite};

/// The registrations of a store.
#[async_trait]
pub trait Registry: Send + Sync + std::fmt::Debug {
    /// Adds or replaces a client.
    async fn put_client(&self, client: &Client) -> Result<(), StoreError>;
    /// One client.
    async fn client(&self, id: &str) -> Result<Option<Client>, StoreError>;
    /// Every client, by id.
    async fn clients(&self) -> Result<Vec<Client>, StoreError>;
    /// Removes a client; whether there was one.
    async fn remove_client(&self, id: &str) -> Result<bool, StoreError>;
    /// Adds or replaces a user.
    async fn put_user(&self, user: &User) -> Result<(), StoreError>;
    /// One user.
    async fn user(&self, name: &str) -> Result<Option<User>, StoreError>;
    /// Every user, by name.
    async fn users(&self) -> Result<Vec<User>, StoreError>;
    /// Whether any client or user is registered (then every request needs a token).
    async fn has_registrations(&self) -> Result<bool, StoreError>;
    /// Records a token the authorization server tracks (a revoked access token, a refresh
    /// token) under `id`, its `body` the JSON the caller made.
    async fn put_token(&self, id: &str, body: &str) -> Result<(), StoreError>;
    /// One tracked token's body.
    async fn token(&self, id: &str) -> Result<Option<String>, StoreError>;
    /// Every tracked token, `(id, body)` by id.
    async fn tokens(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Forgets a tracked token; whether there was one.
    async fn remove_token(&self, id: &str) -> Result<bool, StoreError>;
}

/// Which table, and its key column.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Table {
    Client,
    User,
    Token,
    /// The exchange's tables (`crate::exchange_state`).
    ExchangeNode,
    ExchangeHolding,
    ExchangeAlias,
    ExchangeDispatch,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Client => "auth_client",
            Table::User => "auth_user",
            Table::Token => "auth_token",
            Table::ExchangeNode => "exchange_node",
            Table::ExchangeHolding => "exchange_holding",
            Table::ExchangeAlias => "exchange_alias",
            Table::ExchangeDispatch => "exchange_dispatch",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Table::User => "name",
            _ => "id",
        }
    }
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(e.to_string()))
}

pub(crate) fn from_json<T: DeserializeOwned>(table: Table, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Backend(format!("{} holds an unreadable row: {e}", table.name())))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What each backend provides: rows of one table by key.
#[async_trait]
pub(crate) trait Rows: Send + Sync + std::fmt::Debug {
    /// Inserts or replaces the row `key`.
    async fn put_row(&self, table: Table, key: &str, body: String) -> Result<(), StoreError>;
    /// The row `key`, or every row in key order, as `(key, body)`.
    async fn rows(
        &self,
        table: Table,
        key: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// The rows whose key is at least `from` and below `to`, in key order.
    async fn rows_between(
        &self,
        table: Table,
        from: &str,
        to: &str,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Deletes the row `key`; whether there was one.
    async fn delete_row(&self, table: Table, key: &str) -> Result<bool, StoreError>;
    /// Whether either table has a row.
    async fn any_rows(&self) -> Result<bool, StoreError>;
}

/// Whether either table has a row (both backends).
const ANY_ROWS: &str =
    "SELECT EXISTS (SELECT 1 FROM auth_client) OR EXISTS (SELECT 1 FROM auth_user)";

/// Inserts or replaces a row (`$n` placeholders, as `sql` writes them for both backends).
fn put_sql(table: Table) -> String {
    format!(
        "INSERT INTO {t} ({k}, body, updated) VALUES ($1, $2, $3) \
         ON CONFLICT ({k}) DO UPDATE SET body = excluded.body, updated = excluded.updated",
        t = table.name(),
        k = table.key()
    )
}

fn rows_sql(table: Table, one: bool) -> String {
    let filter = if one {
        format!(" WHERE {} = $1", table.key())
    } else {
        String::new()
    };
    format!(
        "SELECT {k}, body FROM {t}{filter} ORDER BY {k}",
        t = table.name(),
        k = table.key()
    )
}

fn between_sql(table: Table) -> String {
    format!(
        "SELECT {k}, body FROM {t} WHERE {k} >= $1 AND {k} < $2 ORDER BY {k}",
        t = table.name(),
        k = table.key()
    )
}

fn delete_sql(table: Table) -> String {
    format!("DELETE FROM {} WHERE {} = $1", table.name(), table.key())
}

#[async_trait]
impl<T: Rows> Registry for T {
    async fn put_client(&self, client: &Client) -> Result<(), StoreError> {
        self.put_row(Table::Client, &client.id, to_json(client)?)
            .await
    }

    async fn client(&self, id: &str) -> Result<Option<Client>, StoreError> {
        let rows = self.rows(Table::Client, Some(id)).await?;
        rows.first()
            .map(|(_, r)| from_json(Table::Client, r))
            .transpose()
    }

    async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        let rows = self.rows(Table::Client, None).await?;
        rows.iter()
            .map(|(_, r)| from_json(Table::Client, r))
            .collect()
    }

    async fn remove_client(&self, id: &str) -> Result<bool, StoreError> {
        self.delete_row(Table::Client, id).await
    }

    async fn put_user(&self, user: &User) -> Result<(), StoreError> {
        self.put_row(Table::User, &user.name, to_json(user)?).await
    }

    async fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let rows = self.rows(Table::User, Some(name)).await?;
        rows.first()
            .map(|(_, r)| from_json(Table::User, r))
            .transpose()
    }

    async fn users(&self) -> Result<Vec<User>, StoreError> {
        let rows = self.rows(Table::User, None).await?;
        rows.iter()
            .map(|(_, r)| from_json(Table::User, r))
            .collect()
    }

    async fn has_registrations(&self) -> Result<bool, StoreError> {
        self.any_rows().await
    }

    async fn put_token(&self, id: &str, body: &str) -> Result<(), StoreError> {
        self.put_row(Table::Token, id, body.to_owned()).await
    }

    async fn token(&self, id: &str) -> Result<Option<String>, StoreError> {
        let rows = self.rows(Table::Token, Some(id)).await?;
        Ok(rows.into_iter().next().map(|(_, body)| body))
    }

    async fn tokens(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.rows(Table::Token, None).await
    }

    async fn remove_token(&self, id: &str) -> Result<bool, StoreError> {
        self.delete_row(Table::Token, id).await
    }
}

#[async_trait]
impl Rows for SqliteStore {
    async fn put_row(&self, table: Table, key: &str, body: String) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write_with(move |conn, _| {
            conn.execute(
                &lite(&put_sql(table)),
                rusqlite::params![key, body, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    async fn rows(
        &self,
        table: Table,
        key: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let key = key.map(str::to_owned);
        self.read_with(move |c| {
            let mut st = c.prepare(&lite(&rows_sql(table, key.is_some())))?;
            let rows = st.query_map(rusqlite::params_from_iter(key), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn rows_between(
        &self,
        table: Table,
        from: &str,
        to: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.read_with(move |c| {
            let mut st = c.prepare(&lite(&between_sql(table)))?;
            let rows = st.query_map(rusqlite::params![from, to], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn delete_row(&self, table: Table, key: &str) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.write_with(move |conn, _| Ok(conn.execute(&lite(&delete_sql(table)), [key])? > 0))
            .await
    }

    async fn any_rows(&self) -> Result<bool, StoreError> {
        self.read_with(|c| Ok(c.query_row(ANY_ROWS, [], |r| r.get(0))?))
            .await
    }
}

#[async_trait]
impl Rows for PostgresStore {
    async fn put_row(&self, table: Table, key: &str, body: String) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(&put_sql(table), &[&key, &body, &now_ms()])
            .await?;
        Ok(())
    }

    async fn rows(
        &self,
        table: Table,
        key: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let client = self.client().await?;
        let sql = rows_sql(table, key.is_some());
        let rows = match key {
            Some(k) => client.query(&sql, &[&k]).await?,
            None => client.query(&sql, &[]).await?,
        };
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn rows_between(
        &self,
        table: Table,
        from: &str,
        to: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(&between_sql(table), &[&from, &to]).await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn delete_row(&self, table: Table, key: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client.execute(&delete_sql(table), &[&key]).await? > 0)
    }

    async fn any_rows(&self) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client.query_one(ANY_ROWS, &[]).await?.get(0))
    }
}
