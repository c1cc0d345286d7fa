package packet

import (
	"net/http"
	"strings"
)

// Status returns the HTTP status that fits an answer and a message for the
// client: errorcode 0 (or none) is 200; a code that is an HTTP error status
// (microshop's services answer those) is itself, with its message; and the
// book's services' errorcode 1 is mapped by what they say. Their known
// messages get the status that fits ("no data" is 404, "INVALID PASSWORD"
// 401, anything else 400), and a database error object (ErrorObject) by its
// code: a duplicate entry is 409, a value the column refuses is 400, any
// other is 502. The message then names the code only: the object's SQL
// text and the driver's details never reach a client.
func (m *Message) Status() (status int, msg string) {
	if m.ErrorCode == nil || *m.ErrorCode == 0 {
		return http.StatusOK, m.ErrorMessage
	}
	code := *m.ErrorCode
	if m.ErrorObject != "" {
		return objectStatus(m.ErrorObject)
	}
	if code >= 400 && code <= 599 {
		return code, m.ErrorMessage
	}
	switch strings.ToLower(m.ErrorMessage) {
	case "no data":
		return http.StatusNotFound, m.ErrorMessage
	case "invalid password":
		return http.StatusUnauthorized, m.ErrorMessage
	}
	return http.StatusBadRequest, m.ErrorMessage
}

// badValue are the MySQL error codes of a value that a column refuses: the
// client's input, a 400.
var badValue = map[string]bool{
	"ER_TRUNCATED_WRONG_VALUE_FOR_FIELD": true, // Incorrect integer value: 'abc'
	"ER_TRUNCATED_WRONG_VALUE":           true,
	"WARN_DATA_TRUNCATED":                true,
	"ER_WARN_DATA_OUT_OF_RANGE":          true,
	"ER_DATA_TOO_LONG":                   true,
	"ER_BAD_NULL_ERROR":                  true,
	"ER_NO_DEFAULT_FOR_FIELD":            true,
	"ER_NO_REFERENCED_ROW_2":             true,
	"ER_WRONG_VALUE_COUNT_ON_ROW":        true,
	"ER_PARSE_ERROR":                     true, // the book's members builds SQL from input: a quote in it
}

// objectStatus maps a database error object's code.
func objectStatus(code string) (int, string) {
	switch {
	case code == "ER_DUP_ENTRY":
		return http.StatusConflict, "already exists (ER_DUP_ENTRY)"
	case badValue[code]:
		return http.StatusBadRequest, "a value was refused by the database (" + code + ")"
	case code == "object" || code == "value":
		return http.StatusBadGateway, "the service failed (it answered an error it did not describe)"
	}
	return http.StatusBadGateway, "the service failed: database error " + code
}
