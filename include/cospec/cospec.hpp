// The umbrella header: everything cospec offers. It only includes.
#pragma once

#include "cospec/adapters.hpp"
#include "cospec/combine.hpp"
#include "cospec/decoder/batch_decoder.hpp"
#include "cospec/decoder/batch_schedule.hpp"
#include "cospec/decoder/decoder.hpp"
#include "cospec/decoder/generation.hpp"
#include "cospec/errors.hpp"
#include "cospec/kernels.hpp"
#include "cospec/random.hpp"
#include "cospec/sampling.hpp"
#include "cospec/speculate.hpp"
#include "cospec/token.hpp"
#include "cospec/verify/verifier.hpp"
#include "cospec/version.hpp"
