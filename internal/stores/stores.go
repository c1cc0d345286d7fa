// Package stores is the "stores near me" service: shops with a position,
// found by distance from a point.
//
// Routes: POST /stores {name, longitude, latitude} adds a store and answers
// {id}; PATCH /stores {id, any of name, longitude, latitude} changes it
// and answers it as changed; DELETE /stores?id=N removes it; GET /stores?longitude=&latitude=
// [&radius=KM][&limit=N] lists the stores within radius km (default 5, at
// most 1000), nearest first, at most limit of them (default 20, at most 100).
// With authentication on, POST, PATCH and DELETE need the admin key (no token 401,
// a member's token 403).
//
// # No cursor
//
// The search is a nearest-first top-k query, not a list to walk: limit
// bounds it (a page of MaxLimit stores takes at most MaxLimit ×
// MaxStoreBytes = 91,400 bytes, well inside a packet), and a client that
// wants more asks for a larger limit, a larger radius or another point.
// A cursor would have to be the last (distance, id) of a page, and it could
// not be exact: Redis measures from each store's 52-bit geohash and the
// database path (Redis down) from its coordinates, so the same store can
// sit on either side of a cursor depending on which path answered the next
// page; distances are answered rounded to the metre, so a cursor taken from
// an answer ties; and GEOSEARCH cannot start from a distance, so every page
// would search the whole radius. Paging by id instead would drop the
// nearest-first order the route exists for.
//
// # Design
//
// The stores table is the system of record. A deleted store keeps its row
// (deleted = 1), so ids are never reused. Every row has a version, 1 when
// added, raised by the database with every edit and by the delete, so it
// only ever goes up; a write merges the row it reads back after its own
// update (which may already hold a later write: as right).
//
// Redis holds the view in two keys that share the hash tag {geo}, so every
// script may touch both on a Redis Cluster: the GEO set stores:{geo} of the
// live stores (member = id), and the hash stores:{geo}:info with, per store,
// "vVERSION:1:" and its JSON {name, longitude, latitude} or the tombstone
// "vVERSION:2" (a view written before versions holds "1:JSON" and "2",
// read as versions 1 and 2), plus
// the fields live (how many stores the GEO set should hold), built (the view
// is complete) and epoch (the rebuild in progress).
//
// Every change goes through one Lua script, merge, which applies an entry
// only when its version is higher than the one the view holds: adding a
// store already deleted does nothing, deleting twice does nothing, an edit
// that arrives after a newer one (or after the delete) does nothing. Merging is
// idempotent and commutative, so the view ends up equal to the database
// whatever order the writes' merges arrive in.
//
// Readers run one script that checks the view is built and whole (the GEO
// set holds live members: a key lost on its own is caught), then searches
// and returns each store's details from the hash, so a hot read never
// reaches the database. A view that is not built (FLUSHALL, eviction,
// expiry, first start) is rebuilt by the reader: a begin script drops a
// partial view and sets epoch to a random token, the reader reads every
// store row and merges them in chunks, each chunk only if epoch still holds
// the token; the last chunk sets built. Writes during a rebuild are merged
// either way; a FLUSHALL during the rebuild removes epoch, so the rebuild
// gives up rather than mark an incomplete view complete. The view expires
// after ViewTTL, which bounds how long a write whose merge was lost to a
// Redis failure stays missing.
//
// With Redis down, writes still commit to the database (the failure is
// logged at warn) and searches run on the database: a latitude band from an
// index, then the same haversine formula Redis uses. Redis measures from
// its 52-bit geohash of each store, so the two paths may differ by well
// under a metre.
package stores

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/service"
)

// Limits of the parameters.
const (
	MaxLatitude   = 85.05112878 // the latitudes Redis GEO can index
	DefaultRadius = 5.0         // km
	MaxRadius     = 1000.0      // km
	DefaultLimit  = 20
	MaxLimit      = 100
	MaxNameLength = 128
	// MaxStoreBytes is the most bytes one store takes in an answer, its
	// comma in the results array included. encoding/json writes each
	// character of the name in at most 6 bytes (\u00XX for <, >, & and
	// control characters, \u2028 and \u2029; ¶ becomes \u00b6 when the
	// packet is framed), and a float64 in at most 24 (-1.2345678901234567e-100):
	//
	//	{"id":  6 + 19 (int64)  ,"name":"  9 + 6×128  "  1
	//	,"longitude":  13 + 24  ,"latitude":  12 + 24  ,"distance":  12 + 24
	//	}  1  ,  1  = 6+19+9+768+1+13+24+12+24+12+24+1+1 = 914 bytes.
	MaxStoreBytes = 6 + 19 + 9 + 6*MaxNameLength + 1 + 13 + 24 + 12 + 24 + 12 + 24 + 1 + 1
)

// Store is a store as answered, with its distance from the searched point.
type Store struct {
	ID        int64   `json:"id"`
	Name      string  `json:"name"`
	Longitude float64 `json:"longitude"`
	Latitude  float64 `json:"latitude"`
	// Distance is in km, rounded to the metre.
	Distance float64 `json:"distance"`
}

// Service serves the /stores routes.
type Service struct {
	db    *store.DB
	cache *cache.Cache
	log   *slog.Logger
	// repairs retries the Redis updates that failed after a commit.
	repairs *cache.Repairs
}

// New returns the stores service.
func New(db *store.DB, c *cache.Cache, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{db: db, cache: c, log: log, repairs: cache.NewRepairs(log)}
}

// Routes returns the handlers of the service by "METHOD/path".
func (s *Service) Routes() map[string]service.Handler {
	return map[string]service.Handler{
		"POST/stores":   service.Admin(s.handlePost),
		"GET/stores":    s.handleGet,
		"PATCH/stores":  service.Admin(s.handlePatch),
		"DELETE/stores": service.Admin(s.handleDelete),
	}
}

// position reads and checks the longitude and latitude parameters.
func position(p service.Params) (lon, lat float64, err error) {
	if lon, err = p.Float("longitude"); err != nil {
		return 0, 0, err
	}
	if lat, err = p.Float("latitude"); err != nil {
		return 0, 0, err
	}
	if lon < -180 || lon > 180 {
		return 0, 0, service.BadRequest("longitude must be between -180 and 180")
	}
	if lat < -MaxLatitude || lat > MaxLatitude {
		return 0, 0, service.BadRequest("latitude must be between -%v and %v", MaxLatitude, MaxLatitude)
	}
	return lon, lat, nil
}

func (s *Service) handlePost(ctx context.Context, r *service.Request) (service.Result, error) {
	name, err := r.Params.Text("name", 1, MaxNameLength)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(name) == "" {
		return nil, service.BadRequest("name is required")
	}
	lon, lat, err := position(r.Params)
	if err != nil {
		return nil, err
	}
	id, err := s.Add(ctx, name, lon, lat)
	if err != nil {
		return nil, err
	}
	return service.Result{"id": id}, nil
}

func (s *Service) handleDelete(ctx context.Context, r *service.Request) (service.Result, error) {
	id, err := r.Params.ID("id")
	if err != nil {
		return nil, err
	}
	if err := s.Delete(ctx, id); err != nil {
		return nil, err
	}
	return service.Result{}, nil
}

func (s *Service) handleGet(ctx context.Context, r *service.Request) (service.Result, error) {
	lon, lat, err := position(r.Params)
	if err != nil {
		return nil, err
	}
	radius := DefaultRadius
	if v, _ := r.Params.String("radius"); strings.TrimSpace(v) != "" {
		if radius, err = r.Params.Float("radius"); err != nil {
			return nil, err
		}
	}
	if !(radius > 0 && radius <= MaxRadius) {
		return nil, service.BadRequest("radius must be more than 0 and at most %v km", MaxRadius)
	}
	limit, err := r.Params.IntDefault("limit", DefaultLimit)
	if err != nil {
		return nil, err
	}
	if limit < 1 || limit > MaxLimit {
		return nil, service.BadRequest("limit must be between 1 and %d", MaxLimit)
	}
	found, err := s.Near(ctx, lon, lat, radius, int(limit))
	if err != nil {
		return nil, err
	}
	return service.Results(found), nil
}

// Add stores a new store and returns its id. The database is written
// first; the Redis view follows.
func (s *Service) Add(ctx context.Context, name string, lon, lat float64) (int64, error) {
	id, err := s.insert(ctx, name, lon, lat)
	if err != nil {
		return 0, err
	}
	s.publish(ctx, entry{id: id, name: name, lon: lon, lat: lat, version: 1})
	return id, nil
}

// Delete removes store id; an unknown or already deleted store is a 404.
func (s *Service) Delete(ctx context.Context, id int64) error {
	found, err := s.markDeleted(ctx, id)
	if err != nil {
		return err
	}
	if !found {
		return service.NotFound("store %d not found", id)
	}
	s.publishRow(ctx, id)
	return nil
}

// publish merges e, a row as written, into the view; when Redis fails, the
// row is read again and merged in the background once Redis answers.
func (s *Service) publish(ctx context.Context, e entry) {
	if err := s.merge(ctx, "", false, []entry{e}); err != nil {
		s.log.Warn("stores: Redis update failed; retrying it in the background", "id", e.id, "err", err)
		s.retry(e.id)
	}
}

// publishRow reads store id's row after a write and merges it: the row
// read may hold a later write than the caller's, which is as right (the
// view takes the highest version).
func (s *Service) publishRow(ctx context.Context, id int64) (entry, bool, error) {
	e, ok, err := s.row(ctx, id)
	if err != nil || !ok {
		s.retry(id)
		return e, ok, err
	}
	s.publish(ctx, e)
	return e, true, nil
}

// retry merges store id's row, read again from the database, into the view
// in the background once Redis answers. Entries are versioned, so a late
// one never undoes a newer one, and the row read then is the latest.
func (s *Service) retry(id int64) {
	s.repairs.Add(fmt.Sprintf("stores:%d", id), func(ctx context.Context) error {
		e, ok, err := s.row(ctx, id)
		if err != nil || !ok {
			return err
		}
		return s.merge(ctx, "", false, []entry{e})
	})
}

// Near returns up to limit stores within radius km of (lon, lat), nearest
// first. It searches the Redis view, rebuilding it from the database when
// it is missing, and searches the database when Redis cannot answer.
func (s *Service) Near(ctx context.Context, lon, lat, radius float64, limit int) ([]Store, error) {
	found, err := s.viewNear(ctx, lon, lat, radius, limit)
	if err == nil {
		return found, nil
	}
	if store.IsFailure(err) {
		return nil, err
	}
	if !errors.Is(err, errRebuildRaced) {
		s.log.Warn("stores: Redis unavailable, searching the database", "err", err)
	}
	return s.dbNear(ctx, lon, lat, radius, limit)
}

// earthRadius is the radius Redis GEO uses, in km.
const earthRadius = 6372.797560856

// distance returns the great-circle distance in km between two points,
// with the formula and radius of Redis GEO.
func distance(lon1, lat1, lon2, lat2 float64) float64 {
	const rad = math.Pi / 180
	lat1r, lat2r := lat1*rad, lat2*rad
	u := math.Sin((lat2r - lat1r) / 2)
	v := math.Sin((lon2 - lon1) * rad / 2)
	return 2 * earthRadius * math.Asin(math.Sqrt(u*u+math.Cos(lat1r)*math.Cos(lat2r)*v*v))
}

// roundKM rounds a distance to the metre.
func roundKM(d float64) float64 { return math.Round(d*1000) / 1000 }
