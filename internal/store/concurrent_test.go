package store_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/microshop/microshop/internal/store"
)

// Processes started together on a fresh SQLite file must not race their
// migrations (each Open here stands for one process).
func TestConcurrentOpenMigratesOnce(t *testing.T) {
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "shop.db")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := store.Open(context.Background(), dsn)
			if err != nil {
				errs <- err
				return
			}
			db.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Open: %v", err)
	}
}
