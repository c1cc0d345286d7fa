package purchases

import (
	"fmt"
	"time"
)

// sqliteDate is how SQLite stores purchases.date: fixed-width RFC 3339 text
// in UTC with milliseconds, so that text order is time order.
const sqliteDate = "2006-01-02T15:04:05.000Z"

var sqliteSQL = dialect{
	insert: insertInto + insertRow,
	byKey:  `SELECT id, goodsid FROM purchases WHERE userid = ? AND idem_key = ?`,
	// list reads a page from the index purchases_userid (userid, id),
	// cancelled purchases left out.
	list: `SELECT id, goodsid, date FROM purchases WHERE userid = ? AND id > ? AND cancelled_at IS NULL ORDER BY id LIMIT ?`,
	dateArg: func(t time.Time) any {
		return t.UTC().Format(sqliteDate)
	},
	scanDate: func(src any) (time.Time, error) {
		var s string
		switch v := src.(type) {
		case string:
			s = v
		case []byte:
			s = string(v)
		case time.Time: // a driver that parses dates itself
			return v, nil
		default:
			return time.Time{}, fmt.Errorf("date: unexpected %T", src)
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("date: %w", err)
		}
		return t, nil
	},
}
