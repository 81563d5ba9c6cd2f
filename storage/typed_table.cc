#include "storage/typed_table.h"

namespace shoal::internal {

Status ValueDecodeError(Table table, std::string_view key, const Status& cause) {
  return DataLossError("table '" + std::string(TableName(table)) + "', key '" + PrintableKey(key) +
                       "': stored value does not decode (" + cause.ToString() +
                       "). The state directory is damaged or was written by an incompatible shoal version; "
                       "restore it from a backup or run the shoal version that wrote it");
}

}  // namespace shoal::internal
