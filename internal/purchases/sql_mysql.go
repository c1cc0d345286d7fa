package purchases

import (
	"fmt"
	"time"
)

// mysqlSQL stores purchases.date as DATETIME(3); the connection's time zone
// is UTC and parseTime is on (store.Open), so dates travel as time.Time.
var mysqlSQL = dialect{
	insert: insertInto + insertRow,
	byKey:  `SELECT id, goodsid FROM purchases WHERE userid = ? AND idem_key = ?`,
	// list reads a page from the index purchases_userid (userid, id),
	// cancelled purchases left out.
	list: `SELECT id, goodsid, date FROM purchases WHERE userid = ? AND id > ? AND cancelled_at IS NULL ORDER BY id LIMIT ?`,
	// InnoDB commits concurrent inserts in any order, so ids need the
	// barrier (sales.go).
	shareBarrier: `INSERT INTO purchases (userid, goodsid, date, idem_key) SELECT ?, ?, ?, ? FROM rankings_barrier WHERE id = 1 LOCK IN SHARE MODE`,
	takeBarrier:  `SELECT id FROM rankings_barrier WHERE id = 1 FOR UPDATE`,
	lockBarrier:  `SELECT id FROM rankings_barrier WHERE id = 1 LOCK IN SHARE MODE`,
	dateArg: func(t time.Time) any {
		return t.UTC()
	},
	scanDate: func(src any) (time.Time, error) {
		switch v := src.(type) {
		case time.Time:
			return v, nil
		case []byte: // parseTime off
			t, err := time.ParseInLocation("2006-01-02 15:04:05.999", string(v), time.UTC)
			if err != nil {
				return time.Time{}, fmt.Errorf("date: %w", err)
			}
			return t, nil
		default:
			return time.Time{}, fmt.Errorf("date: unexpected %T", src)
		}
	},
}
