// Model adapters: the single-sequence and batched concepts, type erasure and the batch-of-one
// wrapper (docs/adapters.md).
#pragma once

#include "cospec/adapters/any_model.hpp"
#include "cospec/adapters/batch_of_one.hpp"
#include "cospec/adapters/batched_model_adapter.hpp"
#include "cospec/adapters/model_adapter.hpp"
